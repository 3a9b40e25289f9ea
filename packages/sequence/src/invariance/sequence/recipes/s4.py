"""Recipes of S4 / S4D (HTTYH): config, the registered ``s4`` / ``s4d`` recipes and the kernel /
recurrent-step benches; the delayed-copy reproduce is in
:mod:`invariance.sequence.recipes._s4_experiments`. The mechanism is in
:mod:`invariance.sequence.s4`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    evaluate,
    fit_recipe,
    register,
    register_bench,
)
from invariance.core.bench import compare, machine
from invariance.core.groups import Delay
from invariance.core.recipe import ConfigError
from invariance.core.testing import check_equivariant, check_not_invariant
from invariance.core.train import build_optimizer
from invariance.sequence import hippo
from invariance.sequence.data.synthetic import make_delay_task
from invariance.sequence.nn.s4_layers import S4DKernel, S4Kernel, S4Layer, S4Model, ssm_param_groups
from invariance.sequence.nn.ssm_kernels import cauchy_dplr_kernel, vandermonde_kernel
from invariance.sequence.nn.ssm_reference import naive_dplr_kernel, naive_vandermonde_kernel
from invariance.sequence.s4 import ZeroReferenced

__all__ = [
    "S4Config",
    "S4Recipe",
    "S4DRecipe",
    "delay_task_run",
    "bench_s4_kernels",
    "bench_s4_step",
]

_HTTYH = "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections"
_INITS = ("", *hippo.DIAG_INITS, *hippo.NPLR_MEASURES, "hippo")


class _Seqs(Dataset):
    """Delay-task items: input ``x`` (L, 1), target ``y`` (L, 1), scored positions ``m`` (L,)."""

    def __init__(self, x: Tensor, y: Tensor, delay: int) -> None:
        self.x, self.y = x, y
        self.m = torch.arange(x.shape[1]) >= delay

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i], "m": self.m}


@dataclass
class S4Config(TrainConfig):
    """Delayed-copy task with an S4/S4D encoder (defaults = tiny preset).

    Args:
        length: sequence length L (default: 64).
        delay: copy delay in steps, ``< length`` (default: 32).
        n_train / n_test: sequences (default: 256 / 64).
        d_model / d_state / n_layers: model size; ``d_state`` even (default: 16 / 32 / 1).
        init: S4D init (``lin``, ``inv``, ``legs``, ``real``, ``random``) or S4 measure (``legs``,
            ``fout``, ``legt``, ``lagt``, ``hippo``, ...); ``""`` = the recipe's default
            (``lin`` for s4d, ``legs`` for s4) (default: ``""``).
        dt_min / dt_max: timescale range; ``0`` = HTTYH rule ``timescale_range(length)``
            (default: 0 / 0).
        ssm_lr: learning rate of A, B, P, Δ (default: 2e-3).
    """

    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-2
    length: int = 64
    delay: int = 32
    n_train: int = 256
    n_test: int = 64
    d_model: int = 16
    d_state: int = 32
    n_layers: int = 1
    init: str = ""
    dt_min: float = 0.0
    dt_max: float = 0.0
    ssm_lr: float = 2e-3

    ranges: ClassVar[dict] = {
        "steps": (0, None),
        "length": (2, None),
        "delay": (0, None),
        "n_train": (1, None),
        "n_test": (1, None),
        "d_model": (1, None),
        "d_state": (2, None),
        "n_layers": (1, None),
        "dt_min": (0.0, None),
        "dt_max": (0.0, None),
        "ssm_lr": (0.0, None),
    }
    choices: ClassVar[dict] = {"init": _INITS}

    def validate(self) -> None:
        super().validate()
        name = type(self).__name__
        if self.delay >= self.length:
            raise ConfigError(f"{name}.delay must be < length={self.length}, got {self.delay}")
        if self.d_state % 2:
            raise ConfigError(f"{name}.d_state must be even, got {self.d_state}")
        if (self.dt_min > 0) != (self.dt_max > 0) or self.dt_min > self.dt_max:
            raise ConfigError(
                f"{name}.dt_min/dt_max must both be 0 (HTTYH rule) or 0 < dt_min <= dt_max, "
                f"got {self.dt_min}, {self.dt_max}"
            )


def _dt_range(cfg: S4Config) -> tuple[float, float]:
    if cfg.dt_min > 0 and cfg.dt_max > 0:
        return cfg.dt_min, cfg.dt_max
    return hippo.timescale_range(cfg.length, min_len=min(10, cfg.length))


class _S4RecipeBase(Recipe):
    Config = S4Config
    kernel = "s4d"
    default_init = "lin"
    presets = {
        "tiny": {},
        "full": {
            "length": 1024,
            "delay": 512,
            "n_train": 2048,
            "n_test": 256,
            "d_model": 64,
            "d_state": 64,
            "n_layers": 2,
            "steps": 2000,
            "batch_size": 32,
            "lr": 3e-3,
        },
    }

    def make_data(self, cfg: S4Config, split: str) -> Dataset:
        n = cfg.n_train if split == "train" else cfg.n_test
        seed = cfg.seed + {"train": 0, "val": 7919, "test": 104729}[split]
        d = make_delay_task(n, length=cfg.length, delay=cfg.delay, seed=seed)
        return _Seqs(d["x"], d["y"], cfg.delay)

    def build(self, cfg: S4Config) -> nn.Module:
        dt_min, dt_max = _dt_range(cfg)
        init = cfg.init or self.default_init
        ok = hippo.DIAG_INITS if self.kernel == "s4d" else (*hippo.NPLR_MEASURES, "hippo")
        if init not in ok:
            raise ConfigError(f"S4Config.init must be one of {list(ok)} for {self.kernel}")
        kw: dict[str, Any] = (
            {"init": init} if self.kernel == "s4d" else {"measure": init, "l_max": cfg.length}
        )
        return S4Model(
            1,
            1,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            d_state=cfg.d_state,
            kernel=self.kernel,
            dt_min=dt_min,
            dt_max=dt_max,
            seed=cfg.seed,
            **kw,
        )

    def optimizer(self, cfg: S4Config, model: nn.Module) -> torch.optim.Optimizer:
        """``cfg.optimizer`` over the S4 parameter groups: A, B, P, Δ at ``ssm_lr`` without weight
        decay, 1-D parameters without decay, the rest at ``lr`` / ``weight_decay``."""
        groups = ssm_param_groups(
            model, lr=cfg.lr, weight_decay=cfg.weight_decay, ssm_lr=cfg.ssm_lr
        )
        return build_optimizer(groups, cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def step(self, model: nn.Module, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        x, y, m = batch["x"], batch["y"], batch["m"]
        pred = model(x)
        # score only the positions that have something to recall (t >= delay)
        mse = ((pred - y) ** 2).squeeze(-1)[m].mean()
        return {"loss": mse, "mse": mse.detach()}

    def check(self, model: nn.Module, cfg: S4Config) -> list[CheckResult]:
        """Every causal S4 layer of the model commutes with delays (after removing its constant
        response to zeros); negative control: the same layer with a wrap-around (circular) FFT."""
        grp = Delay(dim=1)
        g = torch.Generator().manual_seed(cfg.seed)
        out = []
        for i, layer in enumerate(m for m in model.modules() if isinstance(m, S4Layer)):
            x = torch.randn(2, min(cfg.length, 48), layer.d_model, generator=g)
            out.append(
                check_equivariant(
                    f"layer{i}_delay_equivariant", ZeroReferenced(layer), x, grp, "seq", "seq"
                )
            )
            broken = _copy_with(layer, circular=True)
            out.append(
                check_not_invariant(
                    f"layer{i}_circular_fft_breaks_delay",
                    ZeroReferenced(broken),
                    x,
                    grp,
                    "seq",
                    "seq",
                )
            )
        return out

    def reproduce(self, cfg: S4Config, run: Any, *, quick: bool) -> ReproduceResult:
        from invariance.sequence.recipes._s4_experiments import reproduce_delay

        return reproduce_delay(self, cfg, run, quick=quick)


def _copy_with(model: nn.Module, **flags: Any) -> nn.Module:
    m = copy.deepcopy(model)
    for mod in [m, *m.modules()]:
        if isinstance(mod, S4Layer):
            for k, v in flags.items():
                setattr(mod, k, v)
    return m


@register(
    "s4d",
    domain="sequence",
    paper=_HTTYH,
    authors="Gu, Johnson, Timalsina, Rudra, Ré",
    year=2023,
    arxiv="2206.12037",
    code_url="https://github.com/state-spaces/s4",
    symmetry="delay equivariance (causal, time-invariant)",
    baseline="S4D with its Δ range one decade too large, [0.1, 1]",
    tags=("ssm", "hippo", "long-range"),
)
class S4DRecipe(_S4RecipeBase):
    """Diagonal S4 (S4D-Lin by default) on the delayed-copy task."""

    kernel = "s4d"
    default_init = "lin"


@register(
    "s4",
    domain="sequence",
    paper=_HTTYH,
    authors="Gu, Johnson, Timalsina, Rudra, Ré",
    year=2023,
    arxiv="2206.12037",
    code_url="https://github.com/state-spaces/s4",
    symmetry="delay equivariance (causal, time-invariant)",
    baseline="S4 with its Δ range one decade too large, [0.1, 1]",
    tags=("ssm", "hippo", "dplr", "long-range"),
)
class S4Recipe(_S4RecipeBase):
    """DPLR S4 (HiPPO-LegS by default) on the delayed-copy task."""

    kernel = "s4"
    default_init = "legs"


# ------------------------------------------------------------------------------- reproduce


def delay_task_run(recipe: _S4RecipeBase, cfg: S4Config) -> float:
    """Train on the delay task (core ``fit_recipe``) and return the test MSE (target variance 1)."""
    model, _ = fit_recipe(recipe, cfg, progress=False)
    return float(evaluate(recipe, model, cfg, split="test")["mse"])


# ------------------------------------------------------------------------------- benches


def _max_err(a: Tensor, ref: Tensor) -> float:
    return float((a.double() - ref).abs().max())


@register_bench("sequence", "s4_kernels")
def bench_s4_kernels(
    *,
    device: str = "cpu",
    quick: bool = False,
    d_model: int = 64,
    d_state: int = 64,
    repeats: int = 3,
) -> dict:
    """Kernel generation (forward, float32) at H=``d_model``, N=``d_state``: our blocked-GEMM
    Vandermonde (S4D) and shared-reciprocal Cauchy + Woodbury (S4) against the naive formulas
    the official pure-PyTorch path evaluates (:mod:`invariance.sequence.nn.ssm_reference`).
    ``max_err`` columns: max |K - K_ref| against the naive formula evaluated in float64 (same
    parameters). Quick: L=4096; full: L=4096 and 16384."""
    lengths = [4096] if quick else [4096, 16384]
    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        # kernels built before any timing (see bench_s4_step: MKL's batched complex solve failed
        # after torch.utils.benchmark changed the thread count)
        made = {
            L: (
                S4DKernel(d_model, d_state=d_state, seed=0).to(device),
                S4Kernel(d_model, d_state=d_state, l_max=L, seed=0).to(device),
            )
            for L in lengths
        }
        for L in lengths:
            rows += _kernel_rows(L, *made[L], device, repeats)
    for r in rows:
        r.update({"H": d_model, "N": d_state, "dtype": "float32"})
    return {"rows": rows, "machine": machine(device)}


def _kernel_rows(
    L: int, kd: S4DKernel, ks: S4Kernel, device: str, repeats: int
) -> list[dict[str, Any]]:
    c128 = torch.complex128
    rows: list[dict[str, Any]] = []
    A, B, C, dt = kd.ssm()
    ref = naive_vandermonde_kernel(C.to(c128), B.to(c128), A.to(c128), dt.double(), L)
    fns = {
        "s4d_official_naive": lambda: naive_vandermonde_kernel(C, B, A, dt, L),
        "s4d_blocked_gemm": lambda: vandermonde_kernel(C, B, A, dt, L),
    }
    errs = {k: _max_err(f(), ref) for k, f in fns.items()}
    for r in compare(fns, reference="s4d_official_naive", repeats=repeats, device=device):
        rows.append({**r, "L": L, "max_err_vs_fp64": errs[r["name"]]})
    w, P, Bs, Ct, dts = ks.ssm()
    ref = naive_dplr_kernel(Ct.to(c128), Bs.to(c128), P.to(c128), w.to(c128), dts.double(), L)
    fns = {
        "s4_official_naive": lambda: naive_dplr_kernel(Ct, Bs, P, w, dts, L),
        "s4_shared_cauchy": lambda: cauchy_dplr_kernel(Ct, Bs, P, w, dts, L),
    }
    errs = {k: _max_err(f(), ref) for k, f in fns.items()}
    for r in compare(fns, reference="s4_official_naive", repeats=repeats, device=device):
        rows.append({**r, "L": L, "max_err_vs_fp64": errs[r["name"]]})
    return rows


@register_bench("sequence", "s4_step")
def bench_s4_step(
    *,
    device: str = "cpu",
    quick: bool = False,
    d_model: int = 16,
    batch: int = 1,
    steps: int = 64,
    repeats: int = 3,
) -> dict:
    """S4 (DPLR, LegS) recurrent stepping, ``steps`` steps per call: the O(N) step through the
    DPLR structure (``step_mode="linear"``) vs the dense O(N²) discrete matrix (``"dense"``), per
    state size N (setup excluded: one ``step_params`` call before timing)."""
    sizes = [64, 256] if quick else [64, 256, 512]
    rows: list[dict[str, Any]] = []
    # build every kernel before timing: after torch.utils.benchmark changes the thread count, the
    # batched complex LU solve of the setup failed inside MKL on this machine (ZLASWP, N=256)
    setups = {
        (N, mode): _step_setup(d_model, N, mode, batch, steps, device)
        for N in sizes
        for mode in ("dense", "linear")
    }
    with torch.no_grad():
        for N in sizes:
            fns = {f"{mode}_step": setups[(N, mode)] for mode in ("dense", "linear")}
            for r in compare(fns, reference="dense_step", repeats=repeats, device=device):
                rows.append({**r, "N": N, "H": d_model, "steps": steps, "batch": batch})
    return {"rows": rows, "machine": machine(device)}


def _step_setup(H: int, N: int, mode: str, batch: int, steps: int, device: str) -> Any:
    """A zero-argument function stepping an S4-LegS kernel ``steps`` times (setup done here)."""
    with torch.no_grad():
        k = S4Kernel(H, d_state=N, l_max=256, seed=0, step_mode=mode).to(device)
        params = k.step_params()
    u = torch.randn(steps, batch, H, device=device)

    @torch.no_grad()
    def run() -> None:
        x = k.default_state(batch)
        for t in range(steps):
            _, x = k.step(u[t], x, params)

    return run
