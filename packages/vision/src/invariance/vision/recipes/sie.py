"""Recipe of SIE (Garrido, Najman, LeCun 2023): config, the registered ``sie`` recipe (SIE or the
VICReg baseline on pairs of rotated coloured digits) and the reproduce experiment (rotation R^2
from each part of the representation, linear classification). The mechanism is in
:mod:`invariance.vision.sie`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import torch
from torch import Tensor, nn

import invariance.core.train as core_train
from invariance.core import groups as G
from invariance.core.bench import compare, machine, register_bench
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import as_float64, check_equivariant, check_not_invariant
from invariance.vision.data.rot_digits import make_rot_digits
from invariance.vision.recipes._common import mean_sd, reproduce_config
from invariance.vision.recipes.bss import linear_probe
from invariance.vision.sie import SIE, LinearHyperPredictor, VICRegModel, relative_rotation_2d

__all__ = ["SIEConfig", "SIERecipe", "rotation_r2"]


@dataclass
class SIEConfig(TrainConfig):
    """SIE recipe config (tiny preset by default). ``variant``: ``sie`` or ``vicreg`` (the
    baseline: same encoder, one projector, VICReg with the same weights)."""

    steps: int = 40
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-6
    optimizer: str = "adam"
    variant: str = "sie"
    n_objects: int = 128
    n_test: int = 96
    views: int = 8
    size: int = 16
    width: int = 8
    hidden: int = 64
    equi_factor: float = 0.45
    sim: float = 10.0
    std: float = 10.0
    cov: float = 1.0
    pairs_per_object: int = 8
    eval_steps: int = 200
    probe_steps: int = 100

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "batch_size": (4, None),
        "n_objects": (4, 899),
        "n_test": (4, 898),
        "views": (2, None),
        "size": (8, 64),
        "width": (1, None),
        "hidden": (4, None),
        "equi_factor": (0.0, None),
        "sim": (0.0, None),
        "std": (0.0, None),
        "cov": (0.0, None),
        "pairs_per_object": (1, None),
        "eval_steps": (1, None),
        "probe_steps": (1, None),
    }
    choices: ClassVar[dict] = {"variant": ("sie", "vicreg")}


class _Pairs(torch.utils.data.Dataset):
    """Pairs of views of the same object with their relative rotation ``z``."""

    def __init__(self, data: dict[str, Tensor], pairs_per_object: int, seed: int) -> None:
        self.data = data
        n, v = data["theta"].shape
        g = torch.Generator().manual_seed(seed)
        obj = torch.arange(n).repeat_interleave(pairs_per_object)
        a = torch.randint(0, v, (len(obj),), generator=g)
        b = (a + torch.randint(1, v, (len(obj),), generator=g)) % v
        self.obj, self.a, self.b = obj, a, b

    def __len__(self) -> int:
        return len(self.obj)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        o, a, b = self.obj[i], self.a[i], self.b[i]
        th = self.data["theta"][o]
        return {
            "x": self.data["image"][o, a],
            "y": self.data["image"][o, b],
            "z": relative_rotation_2d(th[a : a + 1], th[b : b + 1])[0],
            "label": self.data["label"][o],
        }


@torch.no_grad()
def _represent(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    parts = [model.represent(x[i : i + 512]) for i in range(0, len(x), 512)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def rotation_r2(
    train_pairs: tuple[Tensor, Tensor, Tensor],
    test_pairs: tuple[Tensor, Tensor, Tensor],
    *,
    steps: int = 500,
    hidden: int = 256,
    seed: int = 0,
) -> float:
    """R^2 of predicting ``z = (cos dtheta, sin dtheta)`` from the concatenated representations of
    two views (an MLP ``2d -> hidden -> 2`` on standardised inputs, Adam), on held-out pairs."""
    (a, b, z), (ta, tb, tz) = train_pairs, test_pairs
    x, tx = torch.cat([a, b], 1), torch.cat([ta, tb], 1)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x, tx = (x - mu) / sd, (tx - mu) / sd
    g = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Linear(x.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, z.shape[1]))
    torch.random.set_rng_state(torch_state)
    opt = torch.optim.Adam(head.parameters(), lr=1e-3)
    with torch.enable_grad():
        for _ in range(steps):
            i = torch.randint(0, len(x), (min(256, len(x)),), generator=g)
            loss = (head(x[i]) - z[i]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = head(tx)
    return float(1 - (pred - tz).pow(2).sum() / (tz - tz.mean(0)).pow(2).sum())


class SIERecipe(Recipe):
    """SIE (split invariant/equivariant representation, hypernetwork predictor) or the VICReg
    baseline, trained on pairs of rotated, recoloured views of digits."""

    Config = SIEConfig
    presets = {
        "tiny": {},
        # `reproduce --quick` (3 seeds x 2 arms; 410 s at load 15, about a minute on an idle box)
        "quick": {
            "steps": 150,
            "batch_size": 128,
            "n_objects": 600,
            "width": 16,
            "hidden": 128,
            "eval_steps": 300,
            "probe_steps": 100,
            "n_test": 300,
        },
        # `reproduce` (3 seeds x 2 arms): the spec's 1 500-step, 32 px run shrunk to fit a
        # shared 2-core CPU (16 px, 400 steps of 256 pairs)
        "full": {
            "steps": 400,
            "batch_size": 256,
            "n_objects": 899,
            "width": 16,
            "hidden": 128,
            "eval_steps": 500,
            "probe_steps": 200,
            "n_test": 597,
        },
    }

    def make_data(self, cfg: SIEConfig, split: str) -> _Pairs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be train/val/test, got {split!r}")
        tr = split == "train"
        d = make_rot_digits(
            cfg.n_objects if tr else cfg.n_test,
            seed=cfg.seed if tr else cfg.seed + 1000,
            views=cfg.views,
            size=cfg.size,
            split="train" if tr else "test",
        )
        if tr:
            self._train = d
        return _Pairs(d, cfg.pairs_per_object, cfg.seed + (0 if tr else 1))

    def build(self, cfg: SIEConfig) -> nn.Module:
        self.cfg = cfg
        if cfg.variant == "vicreg":
            return VICRegModel(cfg.width, cfg.hidden, sim=cfg.sim, std=cfg.std, cov=cfg.cov)
        return SIE(
            cfg.width,
            None,
            cfg.hidden,
            2,
            sim=cfg.sim,
            equi_factor=cfg.equi_factor,
            std=cfg.std,
            cov=cfg.cov,
        )

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return model(batch["x"], batch["y"], batch["z"])

    def metrics(self, model: nn.Module, dataset: _Pairs) -> dict[str, float]:
        """``r2_<part>``: rotation R^2 from the pair of representations (head trained on
        training-object pairs, tested on held-out objects); ``acc_<part>``: linear probe of the
        digit on single views; ``shift_<part>``: mean distance between the part's
        representations of two views of one object over the mean distance between objects
        (0 = invariant). Parts: ``all``, and ``inv`` / ``eq`` for SIE."""
        cfg = self.cfg
        model.eval()
        tr = getattr(self, "_train", None)
        if tr is None:
            tr = make_rot_digits(cfg.n_objects, seed=cfg.seed, views=cfg.views, size=cfg.size)
        te = dataset.data
        out: dict[str, float] = {}

        def pairs(d: dict[str, Tensor], seed: int):
            n, v = d["theta"].shape
            g = torch.Generator().manual_seed(seed)
            o = torch.arange(n).repeat_interleave(4)
            a = torch.randint(0, v, (len(o),), generator=g)
            b = (a + torch.randint(1, v, (len(o),), generator=g)) % v
            ri, re = _represent(model, d["image"][o, a])
            si, se = _represent(model, d["image"][o, b])
            z = relative_rotation_2d(d["theta"][o, a], d["theta"][o, b])
            return {"inv": (ri, si), "eq": (re, se), "z": z, "label": d["label"][o]}

        ptr, pte = pairs(tr, cfg.seed + 11), pairs(te, cfg.seed + 12)
        parts = ("inv", "eq", "all") if isinstance(model, SIE) else ("all",)
        for part in parts:

            def get(p, k, part=part):
                if part == "all":
                    return torch.cat([p["inv"][k], p["eq"][k]], 1)
                return p[part][k]

            a, b, ta, tb = get(ptr, 0), get(ptr, 1), get(pte, 0), get(pte, 1)
            out[f"r2_{part}"] = rotation_r2(
                (a, b, ptr["z"]), (ta, tb, pte["z"]), steps=cfg.eval_steps, seed=cfg.seed
            )
            out[f"acc_{part}"] = linear_probe(
                a, ptr["label"], ta, pte["label"], steps=cfg.probe_steps, seed=cfg.seed
            )
            spread = ta - ta[torch.randperm(len(ta), generator=torch.Generator().manual_seed(0))]
            out[f"shift_{part}"] = float(
                (ta - tb).norm(dim=1).mean() / spread.norm(dim=1).mean().clamp_min(1e-12)
            )
        return out

    def check(self, model: nn.Module, cfg: SIEConfig) -> list[CheckResult]:
        gen = torch.Generator().manual_seed(cfg.seed)
        pred = LinearHyperPredictor(6, 2, generator=gen)
        if isinstance(model, SIE):
            pred = model.predictor
        d = pred.dim
        x = torch.randn(8, d, generator=gen, dtype=torch.float64)
        z = torch.randn(8, pred.cond_dim, generator=gen, dtype=torch.float64)
        p64 = as_float64(pred)
        biased = as_float64(LinearHyperPredictor(d, pred.cond_dim, theta0=True, generator=gen))
        scale = G.Scaling(0.2, 5.0)
        return [
            check_equivariant(
                "predictor linear in z: P(x, c z) = c P(x, z)",
                lambda x, z: p64(x, z),
                (x, z),
                scale,
                (None, "scale"),
                "scale",
            ),
            check_equivariant(
                "predictor linear in x: P(c x, z) = c P(x, z)",
                lambda x, z: p64(x, z),
                (x, z),
                scale,
                ("scale", None),
                "scale",
            ),
            check_not_invariant(
                "hypernetwork with an output bias (theta0) is not linear in z (negative control)",
                lambda x, z: biased(x, z),
                (x, z),
                scale,
                (None, "scale"),
                "scale",
            ),
        ]

    def reproduce(self, cfg: SIEConfig, run, *, quick: bool) -> ReproduceResult:
        cfg = reproduce_config(self, cfg, quick)
        t0 = time.perf_counter()
        seeds = [cfg.seed, cfg.seed + 1, cfg.seed + 2]
        res = core_train.train_arms(
            self,
            cfg,
            {"sie": {"variant": "sie"}, "vicreg": {"variant": "vicreg"}},
            seeds,
            run=run,
        )
        keys = sorted({k for v in res.values() for m in v for k in m if k != "seconds"})
        summary = {
            a: {
                k: "{:.3f} +- {:.3f}".format(*mean_sd([m[k] for m in v])) for k in keys if k in v[0]
            }
            for a, v in res.items()
        }
        sie, vic = res["sie"], res["vicreg"]
        checks = {
            "R2(eq) >= R2(VICReg) + 0.5": mean_sd([m["r2_eq"] for m in sie])[0]
            >= mean_sd([m["r2_all"] for m in vic])[0] + 0.5,
            "R2(eq) >= R2(inv) + 0.4": mean_sd([m["r2_eq"] for m in sie])[0]
            >= mean_sd([m["r2_inv"] for m in sie])[0] + 0.4,
            "acc(inv) >= acc(VICReg) - 0.15": mean_sd([m["acc_inv"] for m in sie])[0]
            >= mean_sd([m["acc_all"] for m in vic])[0] - 0.15,
        }
        return ReproduceResult(
            task=f"RotDigits {cfg.size}x{cfg.size} (rotation + colour views): rotation "
            "prediction from a pair of representations",
            metric="rotation R^2 (held-out objects)",
            method="SIE equivariant part",
            baseline="VICReg (whole representation)",
            method_values=[m["r2_eq"] for m in sie],
            baseline_values=[m["r2_all"] for m in vic],
            higher_is_better=True,
            seeds=seeds,
            invariance_error=mean_sd([m["shift_inv"] for m in sie])[0],
            arms={
                "SIE invariant part": [m["r2_inv"] for m in sie],
                "SIE whole representation": [m["r2_all"] for m in sie],
            },
            seconds=time.perf_counter() - t0,
            details={
                "summary (mean +- sd over seeds)": summary,
                "spec acceptance pattern (held?)": checks,
                "invariance_error": "shift_inv: view-to-view distance of the invariant part over "
                "the distance between objects (eq part: see shift_eq)",
                "steps": cfg.steps,
            },
        )


@register_bench("vision", "sie_predictor")
def bench_sie_predictor(
    *, device: str = "cpu", quick: bool = False, batch: int = 256, dim: int = 128
) -> dict:
    """SIE's predictor (forward + backward): our :class:`LinearHyperPredictor` (optim's HyperNet
    + einsum) vs the same computation as ``Linear(z) -> view -> torch.bmm`` and, with
    ``SIE_OFFICIAL_REPO`` set to a checkout of facebookresearch/SIE, the official
    ``ParametrizedNet`` (same weights)."""
    g = torch.Generator().manual_seed(0)
    ours = LinearHyperPredictor(dim, 2, generator=g).to(device)
    lin = nn.Linear(2, dim * dim, bias=False).to(device)
    with torch.no_grad():
        lin.weight.copy_(ours.hyper.output.weight)
    x = torch.randn(batch, dim, generator=g).to(device)
    z = torch.randn(batch, 2, generator=g).to(device)

    def run_ours():
        ours(x, z).sum().backward()

    def run_bmm():
        w = lin(z).view(-1, dim, dim)
        torch.bmm(x[:, None], w.transpose(-2, -1)).sum().backward()

    fns = {"Linear + bmm": run_bmm, "LinearHyperPredictor (ours)": run_ours}
    ref = "Linear + bmm"
    repo = os.environ.get("SIE_OFFICIAL_REPO", "")
    path = Path(repo) / "src" / "hypernetwork.py"
    if repo and path.exists():
        spec = importlib.util.spec_from_file_location("sie_official_hypernetwork", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        args = SimpleNamespace(
            predictor="",
            bias_pred=False,
            hypernetwork="linear",
            bias_hypernet=False,
            predictor_relu=False,
        )
        with contextlib.redirect_stdout(io.StringIO()):
            off = mod.ParametrizedNet(dim, 2, args).to(device)
        with torch.no_grad():
            off.hypernet.net[0].weight.copy_(ours.hyper.output.weight)

        def run_official():
            off(x[:, None], z).sum().backward()

        fns["official ParametrizedNet"] = run_official
        ref = "official ParametrizedNet"
    reps = {"repeats": 3, "min_run_time": 0.1} if quick else {"repeats": 7, "min_run_time": 0.3}
    rows = compare(
        fns, reference=ref, device=device, label=f"batch {batch}, dim {dim}, fwd+bwd", **reps
    )
    return {"rows": rows, "machine": machine(device)}


register(
    "sie",
    domain="vision",
    paper="Self-supervised learning of Split Invariant Equivariant representations",
    authors="Garrido, Najman, LeCun",
    year=2023,
    arxiv="2302.10283",
    code_url="https://github.com/facebookresearch/SIE",
    symmetry="predictor linear in the transformation (W(cz) = c W(z)); invariant part "
    "insensitive to rotation and colour (statistical)",
    baseline="VICReg (same encoder and budget)",
    tags=("ssl", "equivariance"),
)(SIERecipe)
