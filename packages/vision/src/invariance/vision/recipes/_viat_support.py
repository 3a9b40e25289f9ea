"""VIAT recipe support: the camera-roll symmetry checks, the viewpoint-pool plot and the
``viat_nes`` bench (imported by :mod:`invariance.vision.recipes.viat`, which registers it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from invariance.core import groups as G
from invariance.core.bench import compare, machine, register_bench
from invariance.core.recipe import CheckResult
from invariance.core.testing import check_equivariant, check_not_invariant
from invariance.vision.data.prim3d import make_prim3d
from invariance.vision.render import look_at, render
from invariance.vision.viat import (
    GMMViews,
    NESState,
    nes_population,
    nes_step,
    population_points,
    random_viewpoints,
    render_views,
    viewpoint,
)


def _plot_pool(pool: GMMViews, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v = viewpoint(pool.sample(64, generator=torch.Generator().manual_seed(0))).reshape(-1, 6)
    fig, ax = plt.subplots(1, 2, figsize=(8, 3.5))
    ax[0].scatter(v[:, 1], v[:, 2], s=4, alpha=0.5)
    ax[0].set(xlabel="yaw (deg)", ylabel="pitch (deg)", xlim=(-180, 180), ylim=(-70, 70))
    ax[0].axhspan(10, 40, color="green", alpha=0.1, label="natural band")
    ax[0].legend(loc="lower right", fontsize=7)
    ax[1].scatter(v[:, 0], v[:, 3], s=4, alpha=0.5)
    ax[1].set(xlabel="roll (deg)", ylabel="distance", xlim=(-30, 30), ylim=(3, 5))
    fig.suptitle("VIAT training pool: adversarial viewpoints found by GMVFool (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class _CameraRoll(G.Group):
    """Quarter-turn camera rolls acting on viewpoints ``(B, 6)`` (roll is column 0)."""

    name, reps = "camera-roll-C4", ("viewpoint",)

    def sample(self, generator, inputs=()):
        return int(torch.randint(1, 4, (), generator=generator))

    def _act(self, rep, g, x):
        return x + torch.tensor([90.0 * g, 0, 0, 0, 0, 0], dtype=x.dtype)

    def describe(self, g):
        return f"camera roll by {90 * g} degrees"


def _roll_checks(cfg: Any) -> list[CheckResult]:
    """The renderer the method's viewpoints go through: a camera roll by ``90 k`` degrees
    rotates the image by ``-90 k`` exactly (negative control: the unrotated image)."""
    scene, _ = make_prim3d(1, seed=cfg.seed, classes=(2,), dtype=torch.float64)
    v = torch.tensor([[5.0, 30.0, 20.0, 4.0, 0.2, -0.1], [-8.0, -120.0, 35.0, 3.6, 0.0, 0.1]])

    def fn(vv: Tensor) -> Tensor:
        cam = look_at(vv[:, 1], vv[:, 2], vv[:, 0], vv[:, 3], vv[:, 4:6], fov=cfg.fov)
        return render(scene, cam, size=24, scene_index=torch.zeros(len(vv), dtype=torch.long))[
            "rgb"
        ]

    rot = lambda g, y: torch.rot90(y, -g, dims=(-2, -1))  # noqa: E731
    return [
        check_equivariant(
            "render: camera roll = image rotation",
            fn,
            (v,),
            _CameraRoll(),
            "viewpoint",
            rot,
            trials=2,
        ),
        check_not_invariant(
            "render: camera roll changes the image (negative control)",
            fn,
            (v,),
            _CameraRoll(),
            "viewpoint",
            None,
            trials=2,
        ),
    ]


def _official_pepg(path: str):
    """The official PEPG class from a local copy of ``viat/NES_GMM_forAT.py`` (its renderer and
    classifier imports stubbed); used by the bench only, never shipped."""
    import importlib.util
    import sys
    import types

    for name in ("evaluate_forAT", "rendering_image", "classifier", "classifier.predict"):
        sys.modules.setdefault(name, types.ModuleType(name))
    for name in ("datasets", "datasets.opts", "joblib"):
        sys.modules.setdefault(name, types.ModuleType(name))
    sys.modules["evaluate_forAT"].comput_fitness = None
    sys.modules["rendering_image"].render_image = None
    sys.modules["classifier.predict"].test_baseline = None
    sys.modules["datasets.opts"].get_opts = None
    spec = importlib.util.spec_from_file_location("_viat_official_nes", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.PEPG


@register_bench("vision", "viat_nes")
def bench_viat_nes(
    objects: int = 16,
    popsize: int = 21,
    k: int = 5,
    official: str | None = None,
    quick: bool = False,
) -> dict:
    """One GMVFool NES iteration (population, entropy gradient, update) for ``objects``
    objects: ours (all objects in one batched step), ours looped object by object, and, when
    ``official`` names a local copy of the official ``viat/NES_GMM_forAT.py``, the official
    PEPG solver (one per object, as the official pool search runs); plus render throughput."""
    g = torch.Generator().manual_seed(0)
    views = GMMViews.init(objects, k, generator=g)
    target = 0.3

    def ours_batched():
        r, comp = nes_population(views, popsize, generator=g)
        fit = -((population_points(views, r, comp) - target) ** 2).sum(-1)
        nes_step(views, r, comp, fit, NESState(torch.zeros_like(views.mu), 0.1), popsize=popsize)

    def ours_per_object():
        for i in range(objects):
            vi = GMMViews(views.mu[i : i + 1], views.sigma[i : i + 1], views.omega[i : i + 1])
            r, comp = nes_population(vi, popsize, generator=g)
            fit = -((population_points(vi, r, comp) - target) ** 2).sum(-1)
            nes_step(vi, r, comp, fit, NESState(torch.zeros_like(vi.mu), 0.1), popsize=popsize)

    fns = {"ours_batched": ours_batched, "ours_per_object": ours_per_object}
    reference = "ours_per_object"
    if official:
        import numpy as np

        pepg = _official_pepg(official)
        kw = dict(
            num_params=6, num_k=k, sigma_init=0.1, learning_rate=0.1, learning_rate_decay=0.99,
            learning_rate_limit=0, popsize=popsize, average_baseline=False, weight_decay=0.0,
            rank_fitness=True, forget_best=False, mu_lambda=1e-4, sigma_lambda=1e-4,
            random_begin=True, mood="init",
        )  # fmt: skip
        solvers = [pepg(**kw) for _ in range(objects)]

        def official_pepg():
            for sv in solvers:
                sol = sv.ask()
                gm, gs, go = sv.comput_entropy()
                sv.tell(-((sol - target) ** 2).sum(1), gm, gs, go)

        np.random.seed(0)
        fns["official_pepg"] = official_pepg
        reference = "official_pepg"
    rows = compare(fns, reference=reference, repeats=3 if quick else 5)
    scene, _ = make_prim3d(2, seed=0)
    n = 64 if quick else 256
    idx = torch.randint(0, len(scene), (n,), generator=g)
    v = random_viewpoints(n, generator=g)
    rrows = compare(
        {f"render_{n}_views_32px": lambda: render_views(scene, idx, v, size=32, fov=40.0)},
        repeats=3,
    )
    return {
        "rows": rows + rrows,
        "objects": objects,
        "popsize": popsize,
        "k": k,
        "official": "viat/NES_GMM_forAT.py (local copy)" if official else "not given",
        "machine": machine(),
    }
