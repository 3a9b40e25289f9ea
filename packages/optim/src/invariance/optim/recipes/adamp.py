"""Recipes ``adamp`` and ``sgdp``: a BatchNorm CNN on digits, trained through core's ``fit``.

``reproduce`` compares the weight-norm growth of a scale-invariant conv weight under the method
(AdamP / SGDP) and its strongest same-setting competitor (AdamW / SGD with the same lr, momentum
and weight decay), over several seeds, and measures the method's declared invariance on the
trained model: the radial part of an AdamP/SGDP update on the BN-fed conv weights.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from invariance.core.groups import Scaling
from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig
from invariance.core.registry import register
from invariance.core.testing import as_float64, check_invariant, check_not_invariant
from invariance.core.train import evaluate, fit_recipe
from invariance.optim._utils import pyplot, threads
from invariance.optim.adamp import project_radial
from invariance.optim.data import digits_split
from invariance.optim.factory import create_optimizer, list_optimizers

__all__ = ["AdamPConfig", "SGDPConfig", "DigitsBNCNN", "AdamPRecipe", "SGDPRecipe"]

#: the BN-fed (scale-invariant) conv weights of :class:`DigitsBNCNN`
SCALE_INVARIANT = ("features.0.weight", "features.3.weight")
TRACKED = "features.3.weight"


@dataclass
class AdamPConfig(TrainConfig):
    """Digits BN-CNN config (defaults: the tiny preset).

    Args:
        width: channels of the first conv layer (default: ``8``).
        seeds: seeds of the reproduce experiment (default: ``3``).
        optimizer: optimizer of ``train`` (default: ``"adamp"``).
    """

    steps: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    width: int = 8
    seeds: int = 3
    optimizer: str = "adamp"

    ranges: ClassVar[dict] = {
        "steps": (1, None),
        "batch_size": (1, None),
        "lr": (0.0, 10.0),
        "weight_decay": (0.0, 1.0),
        "width": (1, 512),
        "seeds": (1, 100),
        "log_every": (0, None),
        "ckpt_every": (0, None),
    }
    choices: ClassVar[dict] = {"optimizer": tuple(list_optimizers())}


@dataclass
class SGDPConfig(AdamPConfig):
    """As :class:`AdamPConfig` with SGDP (Nesterov, momentum 0.9) at lr 0.1."""

    lr: float = 0.1
    optimizer: str = "sgdp"


class DigitsBNCNN(nn.Module):
    """conv3x3 (no bias) -> BN -> ReLU, twice, global average pool, linear. Conv weights are
    scale-invariant (each feeds a BatchNorm). ``init_norm`` records the initial norm of the second
    conv weight, so the norm growth can be read off a trained model."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)
        self.register_buffer("init_norm", self.features[3].weight.detach().norm().clone())

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"expected images of shape (B, 1, H, W), got {tuple(x.shape)}")
        return self.head(self.features(x).mean((2, 3)))


def _digits_dataset(split: str) -> torch.utils.data.TensorDataset:
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    xtr, ytr, xte, yte = digits_split(seed=0, image=True)
    if split == "train":
        return torch.utils.data.TensorDataset(xtr, ytr)
    return torch.utils.data.TensorDataset(xte, yte)


def _broken_projection(w: Tensor, g: Tensor, u: Tensor) -> Tensor:
    """Negative control: the radial removal without normalising ``w`` (not scale invariant)."""
    W, U = w.reshape(w.shape[0], -1), u.reshape(u.shape[0], -1)
    return (U - W * (W * U).sum(1, keepdim=True)).reshape(u.shape)


def radial_fraction(before: Tensor, after: Tensor) -> float:
    """Largest ``|<Δ_r, w_r>| / (||Δ_r|| ||w_r||)`` over the output channels ``r`` of a step
    ``Δ = after - before``: 0 for an update tangent to every channel's sphere."""
    W = before.reshape(before.shape[0], -1).double()
    D = (after - before).reshape(before.shape[0], -1).double()
    den = (W.norm(dim=1) * D.norm(dim=1)).clamp_min(1e-300)
    return float(((W * D).sum(1).abs() / den).max())


def probe_radial(model: nn.Module, opt_name: str, batch: tuple[Tensor, Tensor], lr: float) -> float:
    """One step of a fresh ``opt_name`` optimizer (no weight decay) on a copy of ``model``; the
    largest radial fraction of the step over the BN-fed conv weights."""
    m = copy.deepcopy(model).train()
    opt = create_optimizer(m, opt_name, lr=lr, weight_decay=0.0)
    x, y = batch
    nn.functional.cross_entropy(m(x), y).backward()
    params = dict(m.named_parameters())
    before = {n: params[n].detach().clone() for n in SCALE_INVARIANT}
    opt.step()
    return max(radial_fraction(before[n], params[n].detach()) for n in SCALE_INVARIANT)


class _ProjectedRecipe(Recipe):
    Config: ClassVar[type] = AdamPConfig
    presets: ClassVar[dict] = {"tiny": {}, "full": {"steps": 1000, "seeds": 5}}
    method_name: ClassVar[str] = "adamp"
    baseline_name: ClassVar[str] = "adamw"
    #: further arm: the optimizer without decoupled decay (only run when weight_decay > 0)
    strawman: ClassVar[str] = "adam"

    def make_data(self, cfg: AdamPConfig, split: str) -> torch.utils.data.Dataset:
        return _digits_dataset(split)

    def build(self, cfg: AdamPConfig) -> nn.Module:
        return DigitsBNCNN(cfg.width)

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        x, y = batch
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y)
        w = model.features[3].weight
        return {
            "loss": loss,
            "acc": (logits.argmax(1) == y).float().mean(),
            "norm_ratio": (w.detach().norm() / model.init_norm),
        }

    def check(self, model: nn.Module, cfg: AdamPConfig) -> list[CheckResult]:
        m64 = as_float64(model).train()
        x, y = (t[:32] for t in self.make_data(cfg, "train").tensors)
        x = x.double()
        name = "features.0.weight"
        w = dict(m64.named_parameters())[name].detach().clone()

        def losses(w: Tensor) -> Tensor:  # per-example losses: they vary across the batch
            out = functional_call(m64, {name: w}, (x,))
            return nn.functional.cross_entropy(out, y, reduction="none")

        wg = w.clone().requires_grad_(True)
        losses(wg).mean().backward()
        g = wg.grad.detach()
        u = torch.randn(w.shape, generator=torch.Generator().manual_seed(0), dtype=w.dtype)
        proj = lambda w, g, u: project_radial(w, g, u, eps=1e-12)[0]
        grp = Scaling(0.2, 5.0)
        return [
            check_invariant(  # approximate: BatchNorm's eps (1e-5) sees the weight's scale
                "BN-fed conv weight: per-example losses invariant to its scale",
                losses,
                (w,),
                grp,
                ("scale",),
                tol=1e-5,
            ),
            check_invariant(
                "projection invariant to the weight's scale",
                proj,
                (w, g, u),
                grp,
                ("scale", None, None),
                tol=1e-6,
            ),
            check_invariant(
                "projection invariant to the gradient's scale",
                proj,
                (w, g, u),
                grp,
                (None, "scale", None),
                tol=1e-6,
            ),
            check_not_invariant(
                "negative control: unnormalised projection",
                _broken_projection,
                (w, g, u),
                grp,
                ("scale", None, None),
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """Method vs same-setting competitor, single-threaded (the models are tiny)."""
        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: AdamPConfig, run: Any, *, quick: bool) -> ReproduceResult:
        t0 = time.time()
        steps = 100 if quick else max(cfg.steps, 1000)
        seeds = list(range(3 if quick else max(cfg.seeds, 3)))
        arms = (self.method_name, self.baseline_name)
        if cfg.weight_decay > 0 and self.strawman not in arms:
            arms += (self.strawman,)  # without weight decay it is the baseline again
        growth: dict[str, list[float]] = {a: [] for a in arms}
        acc: dict[str, list[float]] = {a: [] for a in arms}
        curves: dict[str, list[list[float]]] = {a: [] for a in arms}
        radial: dict[str, list[float]] = {a: [] for a in arms}
        probe = tuple(t[:64] for t in self.make_data(cfg, "train").tensors)
        for s in seeds:
            for arm in arms:
                c = dataclasses.replace(cfg, seed=s, steps=steps, optimizer=arm, log_every=10)
                model, res = fit_recipe(self, c, progress=False)
                ev = evaluate(self, model, c, "test")
                growth[arm].append(100.0 * (float(ev["norm_ratio"]) - 1.0))
                acc[arm].append(float(ev["acc"]))
                curves[arm].append([float(h["norm_ratio"]) for h in res.history])
                radial[arm].append(probe_radial(model, arm, probe, c.lr))
                if run is not None:
                    run.log_metrics({"arm": arm, "seed": s, "growth_pct": growth[arm][-1]})
        plots = self._plot(run, curves, growth, steps)
        m, b = self.method_name, self.baseline_name
        return ReproduceResult(
            task=f"digits BN-CNN, {steps} steps, lr {cfg.lr:g}, weight decay {cfg.weight_decay:g}",
            metric="conv-2 weight-norm growth (%)",
            method=m,
            baseline=b,
            method_values=growth[m],
            baseline_values=growth[b],
            higher_is_better=False,
            invariance_error=max(radial[m]),
            seconds=time.time() - t0,
            seeds=seeds,
            arms={a: growth[a] for a in arms[2:]},
            details={
                "steps": steps,
                "test_acc": acc,
                "invariance_error_is": (
                    "largest |cos(update, w)| per output channel of one fresh-optimizer step on "
                    "the trained model's BN-fed conv weights (0 = tangent)"
                ),
                "radial_fraction_per_arm": radial,
            },
            plots=plots,
        )

    def _plot(self, run: Any, curves: dict, growth: dict, steps: int) -> list[str]:
        plt = None if run is None else pyplot()
        if plt is None:
            return []
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
        for arm, cs in curves.items():
            n = torch.tensor(cs).mean(0)
            xs = torch.linspace(steps / len(n), steps, len(n))
            ax[0].plot(xs, n, label=arm)
            ax[1].plot([arm] * len(growth[arm]), growth[arm], "o", label=arm)
        ax[0].set(title="||w_t|| / ||w_0|| (conv 2, mean over seeds)", xlabel="step")
        ax[1].set(title="norm growth per seed (%)", yscale="symlog")
        ax[0].legend()
        return [str(run.savefig(fig, f"{self.method_name}_norms"))]


_PAPER = "AdamP: Slowing Down the Slowdown for Momentum Optimizers on Scale-invariant Weights"
_AUTHORS = "Heo, Chun, Oh, Han, Yun, Uh, Ha"


@register(
    "adamp",
    domain="optim",
    paper=_PAPER,
    authors=_AUTHORS,
    year=2021,
    arxiv="2006.08217",
    code_url="https://github.com/clovaai/AdamP",
    baseline="adamw",
    symmetry="update tangent to ||w|| on scale-invariant weights (BN-fed conv)",
    tags=("optimizer",),
)
class AdamPRecipe(_ProjectedRecipe):
    """AdamP on a digits BN-CNN; reproduce: weight-norm growth vs AdamW (and Adam)."""


@register(
    "sgdp",
    domain="optim",
    paper=_PAPER,
    authors=_AUTHORS,
    year=2021,
    arxiv="2006.08217",
    code_url="https://github.com/clovaai/AdamP",
    baseline="sgd",
    symmetry="update tangent to ||w|| on scale-invariant weights (BN-fed conv)",
    tags=("optimizer",),
)
class SGDPRecipe(_ProjectedRecipe):
    """SGDP (Nesterov, momentum 0.9) on a digits BN-CNN; reproduce: norm growth vs SGD."""

    Config: ClassVar[type] = SGDPConfig
    method_name: ClassVar[str] = "sgdp"
    baseline_name: ClassVar[str] = "sgd"
    strawman: ClassVar[str] = "sgd"  # no further arm: SGD is already the baseline
