"""Recipe ``mip``: a hypernetwork on γ-conditioned sine regression, trained through core's ``fit``.

``reproduce`` trains the MIP hypernetwork and the plain Kaiming/zero-bias hypernetwork (the
paper's baseline) with the same optimizer, lr and data over several seeds, compares their held-out
MSE, and measures MIP's declared invariance on the trained model (the norm of the hypernetwork's
input does not depend on the scale of γ). The full size sweeps the learning rate.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from invariance.core.groups import Scaling
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import check_equivariant, check_not_invariant, equivariance_error
from invariance.core.train import fit_recipe
from invariance.optim._utils import pyplot, threads
from invariance.optim.data import make_gamma_sine
from invariance.optim.factory import list_optimizers
from invariance.optim.mip import HyperNet, encode_cos_sin

__all__ = ["MIPConfig", "MIPRecipe"]


# ------------------------------------------------------------------------------ training helper


def _sine_primary(depth: int = 5, width: int = 32) -> nn.Module:
    """Primary MLP ``1 -> width -> ... -> 1`` with ``depth`` linear layers and LeakyReLU."""
    if depth < 2:
        raise ValueError(f"depth must be >= 2, got {depth}")
    layers: list[nn.Module] = [nn.Linear(1, width), nn.LeakyReLU()]
    for _ in range(depth - 2):
        layers += [nn.Linear(width, width), nn.LeakyReLU()]
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def _gamma_grid_eval(hn: HyperNet, n_gamma: int = 11, n_x: int = 64) -> float:
    """Held-out MSE of ``y = sin((1+4γ)x)`` on a γ x x grid (k = 1)."""
    gam = torch.linspace(0, 1, n_gamma)[:, None]
    x = torch.linspace(-2, 2, n_x)[None, :, None].expand(n_gamma, n_x, 1)
    y = torch.sin((1 + 4 * gam[:, None, :]) * x)
    with torch.no_grad():
        return float((hn(gam, x) - y).pow(2).mean())


def _train_gamma_regression(
    *,
    mip: bool,
    seed: int,
    steps: int,
    lr: float,
    depth: int = 5,
    gammas_per_step: int = 8,
    xs_per_gamma: int = 32,
    tail: int = 50,
) -> dict[str, Any]:
    """Train a hypernetwork (MIP or baseline) on γ-conditioned sine regression with Adam.

    Returns the training curve, ``train_loss_mean`` (mean over all steps), ``train_loss_final``
    (mean over the last ``tail`` steps) and ``test_loss`` (held-out MSE on the γ x x grid).
    """
    g = torch.Generator().manual_seed(seed)
    hn = HyperNet(_sine_primary(depth), cond_dim=1, mip=mip, generator=g)
    opt = torch.optim.Adam(hn.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        gam = torch.rand(gammas_per_step, 1, generator=g)
        x = torch.rand(gammas_per_step, xs_per_gamma, 1, generator=g) * 4 - 2
        y = torch.sin((1 + 4 * gam[:, None, :]) * x)
        loss = (hn(gam, x) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))

    def _mean(v: list[float]) -> float:
        return sum(v) / len(v) if v and all(math.isfinite(u) for u in v) else float("inf")

    return {
        "curve": losses,
        "train_loss_mean": _mean(losses),
        "train_loss_final": _mean(losses[-tail:]),
        "test_loss": _gamma_grid_eval(hn),
    }


# ------------------------------------------------------------------------------------ recipe


@dataclass
class MIPConfig(TrainConfig):
    """γ-conditioned sine regression (defaults: the tiny preset).

    Args:
        n_gamma: number of γ in the dataset (default: ``256``).
        n_x: x samples per γ (default: ``32``).
        mip: MIP or the plain baseline (default: ``True``).
        depth: linear layers of the primary MLP (default: ``5``).
        seeds: seeds of the reproduce experiment (default: ``3``).
        optimizer: optimizer name (default: ``"adam"``).
    """

    steps: int = 30
    batch_size: int = 8
    lr: float = 3e-3
    n_gamma: int = 256
    n_x: int = 32
    mip: bool = True
    depth: int = 5
    seeds: int = 3
    optimizer: str = "adam"

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "lr": (0.0, 10.0),
        "weight_decay": (0.0, 1.0),
        "n_gamma": (1, None),
        "n_x": (1, None),
        "depth": (2, 64),
        "seeds": (1, 100),
    }
    choices: ClassVar[dict] = {"optimizer": tuple(list_optimizers())}


class _GammaSine(torch.utils.data.Dataset):
    def __init__(self, cfg: MIPConfig, split: str) -> None:
        off = {"train": 0, "val": 1, "test": 2}[split]
        self.d = make_gamma_sine(cfg.n_gamma, cfg.n_x, seed=cfg.seed * 10 + off)

    def __len__(self) -> int:
        return self.d["gamma"].shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.d["gamma"][i], self.d["x"][i], self.d["y"][i]


def _encoding_norm_check(k: int = 3) -> CheckResult:
    """||E(γ)|| = sqrt(k) for γ whose norms vary tenfold (an identity, so no output variation:
    the inputs' spread is what makes it non-vacuous; the raw-γ negative control follows)."""
    g = torch.Generator().manual_seed(0)
    gamma = torch.rand(64, k, generator=g, dtype=torch.float64) * torch.logspace(
        -1, 0, 64, dtype=torch.float64
    ).unsqueeze(1)
    err = float((encode_cos_sin(gamma).norm(dim=-1) - math.sqrt(k)).abs().max())
    spread = gamma.norm(dim=-1)
    detail = (
        f"max | ||E(γ)|| - sqrt({k}) | = {err:.3g} over 64 γ with ||γ|| in "
        f"[{float(spread.min()):.3g}, {float(spread.max()):.3g}]"
    )
    return CheckResult(
        "MIP encoding norm is sqrt(k) whatever ||γ||", err, 1e-12, err <= 1e-12, detail=detail
    )


@register(
    "mip",
    domain="optim",
    paper="Magnitude Invariant Parametrizations Improve Hypernetwork Learning",
    authors="Gonzalez Ortiz, Guttag, Dalca",
    year=2024,
    arxiv="2304.07645",
    code_url="https://github.com/JJGO/hyperlight",
    baseline="kaiming_hypernet",
    symmetry="hypernet input norm invariant to the scale of gamma",
    tags=("hypernetwork", "parametrization"),
)
class MIPRecipe(Recipe):
    """MIP hypernetwork on γ-conditioned regression; reproduce: held-out MSE vs the plain
    Kaiming/zero-bias hypernetwork (same optimizer, lr, data, seeds)."""

    Config: ClassVar[type] = MIPConfig
    presets: ClassVar[dict] = {"tiny": {}, "full": {"steps": 300, "seeds": 5}}
    unused_parameters: ClassVar[tuple[str, ...]] = ("primary.",)

    def make_data(self, cfg: MIPConfig, split: str) -> torch.utils.data.Dataset:
        return _GammaSine(cfg, split)

    def build(self, cfg: MIPConfig) -> nn.Module:
        return HyperNet(
            _sine_primary(cfg.depth),
            cond_dim=1,
            mip=cfg.mip,
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        gamma, x, y = batch
        return {"loss": (model(gamma, x) - y).pow(2).mean()}

    def check(self, model: nn.Module, cfg: MIPConfig) -> list[CheckResult]:
        gamma = torch.rand(8, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        grp = Scaling(0.1, 1.0)  # keeps gamma in [0, 1]
        base = HyperNet(
            _sine_primary(), cond_dim=1, mip=False, generator=torch.Generator().manual_seed(0)
        ).double()
        return [
            _encoding_norm_check(),
            check_equivariant(
                "baseline hypernet is positively homogeneous",
                base.predict_flat,
                (gamma,),
                grp,
                ("scale",),
                "scale",
            ),
            check_not_invariant(
                "negative control: raw-gamma input norm",
                lambda z: z.norm(dim=-1),
                (gamma,),
                grp,
                ("scale",),
            ),
            check_not_invariant(
                "negative control: MIP output is not homogeneous",
                copy.deepcopy(model).double().predict_flat,
                (gamma,),
                grp,
                ("scale",),
                "scale",
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """The paper-analog experiment (single-threaded: the models are tiny)."""
        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: MIPConfig, run: Any, *, quick: bool) -> ReproduceResult:
        t0 = time.time()
        lrs = [cfg.lr] if quick else sorted({1e-4, 3e-4, 1e-3, 3e-3, cfg.lr})
        seeds = [0, 1, 2] if quick else list(range(max(cfg.seeds, 3)))
        steps = 150 if quick else max(cfg.steps, 300)
        arms = {"mip": True, "kaiming_hypernet": False}
        test: dict[str, dict[float, list[float]]] = {a: {lr: [] for lr in lrs} for a in arms}
        curves: dict[str, list[float]] = {}
        inv_err = []
        for lr in lrs:
            for s in seeds:
                for arm, mip in arms.items():
                    c = dataclasses.replace(cfg, seed=s, lr=lr, mip=mip, steps=steps, log_every=5)
                    model, res = fit_recipe(self, c, progress=False)
                    test[arm][lr].append(_gamma_grid_eval(model))
                    if lr == cfg.lr and s == seeds[0]:
                        curves[arm] = [h["loss"] for h in res.history]
                    if mip and lr == cfg.lr:
                        inv_err.append(_encoding_invariance_error(model))
                    if run is not None:
                        run.log_metrics({"arm": arm, "seed": s, "lr": lr, "mse": test[arm][lr][-1]})
        plots = _plot(run, test, curves, lrs, steps, cfg.lr)
        return ReproduceResult(
            task=(
                f"gamma-conditioned sine regression, primary depth {cfg.depth}, {steps} steps, "
                f"{cfg.optimizer} lr {cfg.lr:g}"
            ),
            metric="held-out MSE",
            method="mip",
            baseline="kaiming_hypernet",
            method_values=test["mip"][cfg.lr],
            baseline_values=test["kaiming_hypernet"][cfg.lr],
            higher_is_better=False,
            invariance_error=max(inv_err),
            seconds=time.time() - t0,
            seeds=seeds,
            details={
                "held_out_per_lr": {a: {str(k): v for k, v in d.items()} for a, d in test.items()},
                "steps": steps,
                "depth": cfg.depth,
                "invariance_error_is": "largest relative change of ||E(γ)|| for γ -> cγ",
            },
            plots=plots,
        )


def _encoding_invariance_error(model: HyperNet) -> float:
    """Relative change of the trained hypernetwork's input norm under γ -> cγ."""
    gamma = torch.rand(32, model.cond_dim, generator=torch.Generator().manual_seed(0))
    fn = lambda z: model.encode(z.double()).norm(dim=-1)
    return float(
        equivariance_error(fn, (gamma.double(),), Scaling(0.1, 1.0), ("scale",)).relative_error
    )


def _plot(
    run: Any, test: dict, curves: dict, lrs: list[float], steps: int, lr0: float
) -> list[str]:
    plt = None if run is None else pyplot()
    if plt is None:
        return []
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    for arm, st in (("mip", "o"), ("kaiming_hypernet", "s")):
        for lr in lrs:
            ax[0].plot(
                [lr] * len(test[arm][lr]), test[arm][lr], st, label=arm if lr == lrs[0] else None
            )
    ax[0].set(
        xscale="log",
        yscale="log",
        xlabel="lr",
        ylabel="held-out MSE (per seed)",
        title=f"after {steps} steps",
    )
    ax[0].legend()
    for arm, c in curves.items():
        ax[1].plot(c, label=arm)
    ax[1].set(yscale="log", xlabel="log step", ylabel=f"train MSE (seed 0, lr {lr0:g})")
    ax[1].legend()
    return [str(run.savefig(fig, "mip_lr_sweep"))]
