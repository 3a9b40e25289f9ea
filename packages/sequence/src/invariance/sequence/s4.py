r"""S4 / S4D state-space layers with HiPPO initialisation (HTTYH).

Paper: "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections",
Gu, Johnson, Timalsina, Rudra, Ré, ICLR 2023, arXiv:2206.12037 (with S4, arXiv:2111.00396, and
S4D, arXiv:2206.11893). Official code: https://github.com/state-spaces/s4 (Apache-2.0); read for the
conventions, no code copied.

Mechanism. A layer applies, per channel h, the SSM :math:`x' = Ax + Bu,\ y = Cx + Du` discretised
with step :math:`\Delta_h`, as a causal convolution with the kernel :math:`K_l = C\bar A^l\bar B`
(FFT, length 2L zero padding), then GELU, a position-wise linear map and a GLU. :math:`A` is a
HiPPO matrix: diagonal (S4D, :class:`S4DKernel`: Vandermonde product, Lin/Inv/LegS inits) or
diagonal-plus-low-rank (S4, :class:`S4Kernel`: Cauchy sums at the FFT nodes + Woodbury, with the
:math:`\tilde C = C(I-\bar A^L)` truncation trick). HTTYH explains why: TI-LegS projects the
input's history onto exponentially warped Legendre polynomials
(:func:`invariance.sequence.hippo.legs_reconstruct`), FouT onto a sliding Fourier basis, and
:math:`\Delta` sets the time scale, so :math:`\log\Delta\sim U[\log(1/L_{max}),\log(1/L_{min})]`
(:func:`invariance.sequence.hippo.timescale_range`). The same map can be run as a recurrence
(``S4Layer.forward_recurrent``).

Tested properties (packages/sequence/tests/test_s4_*.py):
- ``test_s4_cauchy_kernel_equals_dense`` / ``test_s4d_vandermonde_equals_dense``: fast kernels
  equal the slow dense kernel :math:`C\bar A^l\bar B` to 1e-6 (float64), for every init/measure;
  ``test_s4_kernel_equals_hippo_ssm``: the DPLR kernel equals the original HiPPO SSM's.
- ``test_s4_recurrent_equals_convolution``: stepping the recurrence gives the convolution output;
  ``test_s4_linear_step_equals_dense_step``: the O(N) DPLR step (bilinear through Woodbury, half
  state) equals the dense O(N²) step state by state (1e-10) and the convolution (float64 1e-8);
  ``test_s4_linear_step_float32``: float32 recurrence = convolution (1e-5; FouT 1e-4).
- ``test_s4_layer_delay_equivariant``: shifting the input shifts the output (causal layer, after
  removing the constant response to zeros); negative controls
  ``test_s4_layer_circular_fft_not_delay_equivariant`` (FFT without zero padding wraps around) and
  ``test_s4_layer_bidirectional_not_delay_equivariant``.
- ``test_s4_double_length`` (same true C after doubling), ``test_s4_bad_input``.
- ``test_s4d_timescale_is_time_rescaling``: K_l(2Δ) = K_{2l}(Δ) + K_{2l+1}(Δ) exactly (ZOH).
- ``test_s4d_learns_delay_with_httyh_timescale``: S4D with the HTTYH Δ range beats the mis-set
  range on a delayed-copy task (the learning test).
- hippo: see :mod:`invariance.sequence.hippo`.

Deviations: the DPLR kernel uses the naive Cauchy sum (no pykeops / CUDA extension, chunked over
frequencies for memory); the S4 recurrent step is O(N) through the DPLR structure (``step_mode=
"linear"``, default; the dense O(N²) step is kept as ``"dense"``), but its one-off setup computes
the true C from :math:`\tilde C` with a dense :math:`\bar A^{L}` (O(N³)); Re(w) is floored at
-1e-4 (FouT's undamped modes otherwise break the float32 Cauchy kernel);
:math:`\tilde C` is built at construction (``l_max`` required) rather than at the first forward; the
layer uses nn.Linear + GLU (official S4D: Conv1d(k=1) + GLU, the same map); there is no pre/post
norm inside the layer (the residual pre-norm lives in :class:`S4Model`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from invariance.core import (
    CheckResult,
    Recipe,
    ReproduceResult,
    TrainConfig,
    register,
    register_bench,
)
from invariance.core.groups import Delay
from invariance.core.testing import check_equivariant, check_not_invariant
from invariance.sequence import hippo
from invariance.sequence.data.synthetic import make_delay_task
from invariance.sequence.nn.s4_layers import S4DKernel, S4Kernel, S4Layer, S4Model, ssm_param_groups
from invariance.sequence.nn.ssm_kernels import dense_kernel, discretize_diag

__all__ = [
    "S4DKernel",
    "S4Kernel",
    "S4Layer",
    "S4Model",
    "ssm_param_groups",
    "S4Config",
    "S4Recipe",
    "S4DRecipe",
    "ZeroReferenced",
    "delay_task_run",
]


_HTTYH = "How to Train Your HiPPO: State Space Models with Generalized Orthogonal Basis Projections"


class ZeroReferenced(nn.Module):
    r"""``x -> f(x) - f(0)``: removes the constant response to silence, so that a causal
    time-invariant ``f`` commutes *exactly* with zero-filled delays (used by the symmetry
    checks)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) - self.model(torch.zeros_like(x))


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
        delay: copy delay in steps (default: 32).
        n_train / n_test: sequences (default: 256 / 64).
        d_model / d_state / n_layers: model size (default: 16 / 32 / 1).
        init: S4D init (``lin``, ``inv``, ``legs``, ``random``) or S4 measure (``legs``, ``fout``,
            ``hippo``, ...) (default: ``"lin"`` for s4d, ``"legs"`` for s4).
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


def _dt_range(cfg: S4Config) -> tuple[float, float]:
    if cfg.dt_min > 0 and cfg.dt_max > 0:
        return cfg.dt_min, cfg.dt_max
    return hippo.timescale_range(cfg.length, min_len=10)


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
        return torch.optim.AdamW(
            ssm_param_groups(model, lr=cfg.lr, weight_decay=cfg.weight_decay, ssm_lr=cfg.ssm_lr),
            lr=cfg.lr,
        )

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
        return _reproduce_delay(self, cfg, run, quick=quick)


def _copy_with(model: nn.Module, **flags: Any) -> nn.Module:
    import copy

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
    baseline="S4D with a mis-set timescale range [0.1, 1]",
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
    baseline="S4 with a mis-set timescale range [0.1, 1]",
    tags=("ssm", "hippo", "dplr", "long-range"),
)
class S4Recipe(_S4RecipeBase):
    """DPLR S4 (HiPPO-LegS by default) on the delayed-copy task."""

    kernel = "s4"
    default_init = "legs"


# ------------------------------------------------------------------------------- reproduce


def delay_task_run(recipe: _S4RecipeBase, cfg: S4Config) -> float:
    """Train on the delay task with the plain loop and return the test MSE (target variance 1)."""
    from invariance.core import evaluate, fit_recipe

    model, _ = fit_recipe(recipe, cfg, progress=False)
    return float(evaluate(recipe, model, cfg, split="test")["mse"])


def _reproduce_delay(
    recipe: _S4RecipeBase, cfg: S4Config, run: Any, *, quick: bool
) -> ReproduceResult:
    """Delayed copy: effect of the timescale init (HTTYH rule vs mis-set [0.1, 1]) and of the basis
    (S4D-Lin / S4D-Inv / S4D-Random diag; S4-LegS / S4-FouT DPLR), 3 seeds, plus a bar plot."""

    from invariance.core import make_config

    t0 = time.time()
    seeds = [0, 1, 2]
    if quick:
        base = dict(length=64, delay=32, steps=60, d_model=16, n_train=256, n_test=64)
        variants = [("s4d", "lin"), ("s4", "legs")]
    else:
        # sized to ~10 min on one idle core (36 runs); measured figures in the README
        base = dict(
            length=128, delay=64, steps=200, d_model=16, d_state=32, n_train=512, n_test=128
        )
        variants = [
            ("s4d", "lin"),
            ("s4d", "inv"),
            ("s4d", "legs"),
            ("s4d", "random"),
            ("s4", "legs"),
            ("s4", "fout"),
        ]
    rule = hippo.timescale_range(base["length"])
    dts = {"httyh": rule, "misset": (0.1, 1.0)}
    results: dict[str, dict[str, list[float]]] = {}
    for kernel, init in variants:
        rec = S4DRecipe() if kernel == "s4d" else S4Recipe()
        for dname, (lo, hi) in dts.items():
            key = f"{kernel}-{init}/{dname}"
            vals = []
            for s in seeds:
                c = make_config(rec, "tiny", **base, init=init, dt_min=lo, dt_max=hi, seed=s)
                vals.append(delay_task_run(rec, c))
                if run is not None:
                    run.log_metrics({"variant": key, "seed": s, "mse": vals[-1]})
            results[key] = {"mse": vals}
    own = f"{recipe.kernel}-{cfg.init or recipe.default_init}"
    if f"{own}/httyh" not in results:
        own = f"{recipe.kernel}-{recipe.default_init}"
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    m_val = mean(results[f"{own}/httyh"]["mse"])
    b_val = mean(results[f"{own}/misset"]["mse"])
    plots = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        # grouped bars: basis (x) x timescale init (colour)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        names = [f"{k}-{i}" for k, i in variants]
        for off, dname, lab in ((-0.2, "httyh", "HTTYH Δ range"), (0.2, "misset", "Δ in [0.1, 1]")):
            v = [results[f"{n}/{dname}"]["mse"] for n in names]
            ax.bar(
                [i + off for i in range(len(names))],
                [mean(x) for x in v],
                0.4,
                yerr=[(max(x) - min(x)) / 2 for x in v],
                label=lab,
            )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("test MSE (mean of 3 seeds)")
        ax.legend(fontsize=8)
        ax.set_title(f"delayed copy L={base['length']}, delay={base['delay']}")
        fig.tight_layout()
        plots.append(str(run.savefig(fig, "delay_task.png")))
        plt.close(fig)
    except Exception as e:  # pragma: no cover - plotting is optional
        plots = []
        results["plot_error"] = {"error": [str(e)]}  # type: ignore[dict-item]
    details = {
        k: {"mse_mean": mean(v["mse"]), "mse": v["mse"]} for k, v in results.items() if "mse" in v
    }
    details["setup"] = {**base, "dt_httyh": list(rule), "dt_misset": [0.1, 1.0], "seeds": seeds}
    return ReproduceResult(
        task=f"delayed copy (white noise, L={base['length']}, delay={base['delay']})",
        metric="test MSE",
        method=f"{own} with HTTYH Δ range {tuple(round(r, 4) for r in rule)}",
        baseline=f"{own} with mis-set Δ range (0.1, 1)",
        method_value=m_val,
        baseline_value=b_val,
        higher_is_better=False,
        seconds=time.time() - t0,
        details=details,
        plots=plots,
    )


# ------------------------------------------------------------------------------- benches


def _naive_diag_kernel(k: S4DKernel, L: int) -> Tensor:
    """Straightforward kernel: explicit powers of the diagonal state matrix, one step at a time."""
    A, B, C, dt = k.ssm()
    dA, dB = discretize_diag(A, B, dt, k.disc)
    x, out = dB, []
    for _ in range(L):
        out.append(2 * torch.einsum("chn,hn->ch", C, x).real)
        x = dA * x
    return torch.stack(out, -1)


def _bench_one(L: int, d_model: int, d_state: int, device: str, _ms: Any) -> dict[str, float]:
    kd = S4DKernel(d_model, d_state=d_state, seed=0).to(device)
    ks = S4Kernel(d_model, d_state=d_state, l_max=L, seed=0).to(device)
    r: dict[str, float] = {}
    r["s4d_vandermonde_ms"] = _ms(lambda: kd(L, chunk=4096), 3)
    r["s4d_naive_powers_ms"] = _ms(lambda: _naive_diag_kernel(kd, L), 1)
    r["s4_cauchy_ms"] = _ms(lambda: ks(L, chunk=256), 3)
    dA, dB = ks.dense_discrete(torch.complex64)
    Ct = ks.true_C().to(torch.complex64)
    r["s4_dense_powers_ms"] = _ms(lambda: dense_kernel(dA, dB, Ct, L), 1)
    layer = S4Layer(d_model, d_state=d_state, seed=0).to(device)
    u = torch.randn(1, L, d_model, device=device)
    r["layer_fft_tokens_per_s"] = L / (_ms(lambda: layer(u), 3) / 1e3)
    r["layer_recurrent_tokens_per_s"] = L / (_ms(lambda: layer.forward_recurrent(u), 1) / 1e3)
    return r


@register_bench("sequence", "s4_kernels")
def bench_s4_kernels(
    *, device: str = "cpu", quick: bool = False, d_model: int = 16, d_state: int = 64
) -> dict:
    """Kernel generation time (ms) vs length: S4D Vandermonde vs explicit powers; S4 Cauchy+Woodbury
    vs the dense O(N²) power iteration; plus S4D layer forward (FFT conv) vs recurrent stepping."""
    from invariance.core import time_fn

    def _ms(fn, repeat):
        return 1e3 * time_fn(fn, warmup=1, repeat=repeat, device=device)["median_s"]

    lengths = [1024, 4096] if quick else [1024, 4096, 16384]
    rows = {}
    with torch.no_grad():
        for L in lengths:
            rows[f"L={L}"] = _bench_one(L, d_model, d_state, device, _ms)
    return rows


def _steps_per_s(k: S4Kernel, steps: int, batch: int, _ms: Any) -> tuple[float, float]:
    """(setup ms, steps/s) of the kernel's recurrent mode over ``steps`` steps."""
    t0 = time.perf_counter()
    params = k.step_params()
    setup_ms = 1e3 * (time.perf_counter() - t0)  # one call: O(N^3) true-C setup
    u = torch.randn(steps, batch, k.H)

    def run() -> None:
        x = k.default_state(batch)
        for t in range(steps):
            _, x = k.step(u[t], x, params)

    return setup_ms, steps / (_ms(run, 3) / 1e3)


@register_bench("sequence", "s4_step")
def bench_s4_step(
    *, device: str = "cpu", quick: bool = False, d_model: int = 16, batch: int = 1, steps: int = 256
) -> dict:
    """S4 (DPLR, LegS) recurrent step throughput: the O(N) step through the DPLR structure
    (``step_mode="linear"``) vs the dense O(N²) discrete matrix (``"dense"``), per state size N.
    Also the one-off setup time (true C from C~, discretisation)."""
    from invariance.core import time_fn

    def _ms(fn, repeat):
        return 1e3 * time_fn(fn, warmup=1, repeat=repeat, device=device)["median_s"]

    sizes = [64, 256] if quick else [64, 256, 512]
    rows = {}
    with torch.no_grad():
        for N in sizes:
            r: dict[str, float] = {}
            for mode in ("linear", "dense"):
                k = S4Kernel(d_model, d_state=N, l_max=256, seed=0, step_mode=mode).to(device)
                setup, sps = _steps_per_s(k, steps, batch, _ms)
                r[f"{mode}_steps_per_s"] = sps
                r[f"{mode}_setup_ms"] = setup
            r["speedup"] = r["linear_steps_per_s"] / r["dense_steps_per_s"]
            rows[f"N={N}"] = r
    return rows
