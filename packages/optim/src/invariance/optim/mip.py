r"""Magnitude Invariant Parametrizations (MIP) for hypernetworks.

Paper: Gonzalez Ortiz, Guttag, Dalca, *Magnitude Invariant Parametrizations Improve Hypernetwork
Learning*, ICLR 2024, arXiv:2304.07645.
Official code: https://github.com/JJGO/hyperlight (PyPI ``hyperlight``), Apache-2.0. We follow its
design choices (LeakyReLU MLP, Kaiming fan-out init, per-tensor output init, θ0 stored as the output
bias); the code is our own and drives the primary network with ``torch.func.functional_call``.

Mechanism. A hypernetwork maps a conditioning :math:`\gamma\in[0,1]^k` to the parameters
:math:`\theta` of a primary network. A ReLU-family MLP with zero biases is positively homogeneous,
so :math:`\|\theta(c\gamma)\| = c\|\theta(\gamma)\|`: the scale of the primary weights swings with
the input magnitude, which destabilises training. MIP removes this proportionality with

1. an input encoding of constant norm, :math:`E(\gamma) = [\cos(\pi\gamma/2), \sin(\pi\gamma/2)]`,
   :math:`\|E(\gamma)\| = \sqrt k`;
2. a residual output, :math:`\theta = \theta_0 + \Delta\theta(E(\gamma))`, where
   :math:`\theta_0` is a learnable set of primary parameters initialised like an ordinary network
   (Kaiming weights, zero biases) and held as the bias of the final layer;
3. a per-tensor initialisation of the final layer (each predicted tensor's block gets its own
   Kaiming fan-out init; blocks predicting biases start at zero).

The baseline (``mip=False``) is the plain hypernetwork: raw :math:`\gamma`, Kaiming-normal
(fan-in) init with zero biases everywhere, the output read directly as :math:`\theta`; it is
positively homogeneous in :math:`\gamma`. (MIP's hidden layers use hyperlight's fan-out init.)

Tested properties (``packages/optim/tests/test_mip.py``):
- ``||E(γ)|| = sqrt(k)`` for every γ, invariant under rescaling γ, with the raw-γ negative control
  (``test_mip_encoding_norm_invariant``);
- the baseline is exactly positively homogeneous (``||θ(2γ)|| / ||θ(γ)|| = 2``, checked as scaling
  equivariance) while MIP is not and stays near ratio 1 (``test_mip_magnitude_ratio``);
- zero output weights give θ = θ0 for every γ (``test_mip_zero_output_weights_give_theta0``);
- weight-copy parity with ``hyperlight.HyperNet`` (``test_mip_parity_hyperlight``);
- learning: on γ-conditioned regression with a 5-layer primary MLP (200 Adam steps at 3e-3,
  seed 0) MIP's final training loss (mean of the last 50 steps) and its held-out loss are both
  < 0.2x the baseline's (``test_mip_learns_better_than_baseline``).

Deviations: hyperlight takes named inputs and predicts a flat dict; we take one tensor ``gamma``
(``(k,)`` or ``(B, k)``) and a primary ``nn.Module``. Input ranges outside [0, 1] warn, as in
hyperlight. The primary's own parameters are frozen and unused (they give names and shapes only);
its buffers (e.g. BatchNorm statistics) are used as they are.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

__all__ = ["HyperNet", "encode_cos_sin"]


def encode_cos_sin(gamma: Tensor, *, warn: bool = True) -> Tensor:
    r"""MIP input encoding ``[cos(πγ/2), sin(πγ/2)]`` on the last dim: ``(..., k) -> (..., 2k)``.

    Its norm is ``sqrt(k)`` whatever ``γ``; values outside ``[0, 1]`` warn (the map is no longer
    one-to-one there).
    """
    if warn and ((gamma < 0).any() or (gamma > 1).any()):
        warnings.warn(
            f"MIP encoding expects gamma in [0, 1], got values in [{float(gamma.min()):.3g}, "
            f"{float(gamma.max()):.3g}]",
            stacklevel=2,
        )
    z = gamma * (math.pi / 2)
    return torch.cat([torch.cos(z), torch.sin(z)], dim=-1)


class HyperNet(nn.Module):
    r"""Hypernetwork predicting every parameter of ``primary`` from a conditioning vector γ.

    Args:
        primary (nn.Module): the network whose parameters are predicted (names and shapes are read;
            its parameters are frozen and replaced at call time).
        cond_dim (int): ``k``, the size of γ.
        hidden_sizes (Sequence[int], optional): hidden widths (default: ``(16, 64, 128)``).
        mip (bool, optional): Magnitude Invariant Parametrization; ``False`` builds the plain
            Kaiming/zero-bias baseline (default: ``True``).
        negative_slope (float, optional): LeakyReLU slope (default: ``0.01``).
        theta0 (str, optional): ``"kaiming"`` (Kaiming-normal weights, zero biases, as hyperlight)
            or ``"primary"`` (copy the primary's current parameters) (default: ``"kaiming"``).
        generator (torch.Generator, optional): RNG of the initialisation (default: ``None``).

    Shapes: ``predict(gamma)``: ``(k,)`` -> dict of tensors with the primary's shapes, or
    ``(B, k)`` -> dict of ``(B, *shape)``. ``forward(gamma, *args)`` calls the primary with the
    predicted parameters (``(B, k)`` γ needs every arg batched as ``(B, ...)``; vmap over B).

    **Invariance**: with ``mip=True`` the encoded input has norm ``sqrt(k)`` for every γ, so the
    predicted parameters do not scale with ``||γ||``. The baseline is positively homogeneous:
    ``θ(cγ) = c θ(γ)`` for ``c > 0``.
    """

    def __init__(
        self,
        primary: nn.Module,
        *,
        cond_dim: int,
        hidden_sizes: Sequence[int] = (16, 64, 128),
        mip: bool = True,
        negative_slope: float = 0.01,
        theta0: str = "kaiming",
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(primary, nn.Module):
            raise TypeError(f"primary must be an nn.Module, got {type(primary).__name__}")
        if int(cond_dim) < 1:
            raise ValueError(f"cond_dim must be >= 1, got {cond_dim}")
        if any(int(h) < 1 for h in hidden_sizes):
            raise ValueError(f"hidden_sizes must be positive, got {list(hidden_sizes)}")
        if theta0 not in ("kaiming", "primary"):
            raise ValueError(f"theta0 must be 'kaiming' or 'primary', got {theta0!r}")
        self.primary = primary.requires_grad_(False)
        self.cond_dim, self.mip, self.theta0_init = int(cond_dim), bool(mip), theta0
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.negative_slope = float(negative_slope)
        self.shapes: dict[str, torch.Size] = {n: p.shape for n, p in primary.named_parameters()}
        if not self.shapes:
            raise ValueError("primary has no parameters to predict")
        self.offsets: dict[str, tuple[int, int]] = {}
        off = 0
        for n, s in self.shapes.items():
            self.offsets[n] = (off, math.prod(s))
            off += math.prod(s)
        self.num_outputs = off
        dims = [2 * self.cond_dim if self.mip else self.cond_dim, *self.hidden_sizes]
        self.hidden = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.act = nn.LeakyReLU(self.negative_slope)
        self.output = nn.Linear(dims[-1], self.num_outputs)
        self._gen = generator
        self.reset_parameters()

    # ------------------------------------------------------------------------------- init
    @torch.no_grad()
    def reset_parameters(self) -> None:
        g = self._gen

        def kaiming(w: Tensor, fan: int) -> None:  # Kaiming normal for LeakyReLU (gain sqrt 2)
            w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype) * math.sqrt(2.0 / fan))

        for lin in self.hidden:
            # MIP: fan-out, as hyperlight; baseline: the usual fan-in Kaiming
            kaiming(lin.weight, lin.out_features if self.mip else lin.in_features)
            lin.bias.zero_()
        W = self.output.weight
        if self.mip:
            # per-tensor output init: each block gets Kaiming fan-out of its own size; biases 0
            for n, (o, size) in self.offsets.items():
                block = W[o : o + size]
                if n.endswith("bias") or len(self.shapes[n]) <= 1:
                    block.zero_()
                else:
                    kaiming(block, size)
            self.output.bias.copy_(self._theta0())
        else:
            # plain hypernetwork: Kaiming (fan-in) over the whole output layer, zero bias
            kaiming(W, W.shape[1])
            self.output.bias.zero_()

    def _theta0(self) -> Tensor:
        parts = []
        for n, p in self.primary.named_parameters():
            if self.theta0_init == "primary":
                parts.append(p.detach().reshape(-1).to(self.output.bias.dtype))
                continue
            t = torch.zeros(p.shape, dtype=self.output.bias.dtype)
            if p.ndim >= 2 and not n.endswith("bias"):
                fan_in = math.prod(p.shape[1:])
                t = torch.randn(p.shape, generator=self._gen, dtype=t.dtype) * math.sqrt(
                    2.0 / fan_in
                )
            parts.append(t.reshape(-1))
        return torch.cat(parts).to(self.output.bias.device)

    # ---------------------------------------------------------------------------- forward
    @property
    def theta0(self) -> dict[str, Tensor]:
        """The independent parameters θ0 (MIP: the output bias), as a dict of primary shapes."""
        return self._unflatten(self.output.bias)

    def encode(self, gamma: Tensor) -> Tensor:
        """The hypernetwork input: ``E(γ)`` with MIP, the raw ``γ`` otherwise."""
        return encode_cos_sin(gamma) if self.mip else gamma

    def _unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        lead = flat.shape[:-1]
        return {
            n: flat[..., o : o + size].reshape(*lead, *self.shapes[n])
            for n, (o, size) in self.offsets.items()
        }

    def _check_gamma(self, gamma: Tensor) -> None:
        if not isinstance(gamma, Tensor) or not gamma.is_floating_point():
            raise TypeError(f"gamma must be a floating tensor, got {type(gamma).__name__}")
        if gamma.ndim not in (1, 2) or gamma.shape[-1] != self.cond_dim:
            raise ValueError(
                f"gamma must have shape ({self.cond_dim},) or (B, {self.cond_dim}), "
                f"got {tuple(gamma.shape)}"
            )

    def predict_flat(self, gamma: Tensor) -> Tensor:
        """All predicted parameters as one flat vector, ``(k,) -> (P,)`` or ``(B, k) -> (B, P)``."""
        self._check_gamma(gamma)
        x = self.encode(gamma)
        for lin in self.hidden:
            x = self.act(lin(x))
        return self.output(x)

    def predict(self, gamma: Tensor) -> dict[str, Tensor]:
        """Predicted primary parameters by name."""
        return self._unflatten(self.predict_flat(gamma))

    def forward(self, gamma: Tensor, *args: Any, **kwargs: Any) -> Any:
        params = self.predict(gamma)
        if gamma.ndim == 1:
            return functional_call(self.primary, params, args, kwargs)

        def call(p: dict[str, Tensor], *a: Any) -> Any:
            return functional_call(self.primary, p, a, kwargs)

        return vmap(call)(params, *args)

    def extra_repr(self) -> str:
        return (
            f"cond_dim={self.cond_dim}, hidden_sizes={list(self.hidden_sizes)}, mip={self.mip}, "
            f"num_outputs={self.num_outputs}"
        )


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

from dataclasses import dataclass  # noqa: E402

from invariance.core.recipe import CheckResult, Recipe, ReproduceResult, TrainConfig  # noqa: E402
from invariance.core.registry import register  # noqa: E402


@dataclass
class MIPConfig(TrainConfig):
    """γ-conditioned sine regression (defaults: the tiny preset).

    Args:
        n_gamma: number of γ in the dataset (default: ``256``).
        n_x: x samples per γ (default: ``32``).
        mip: MIP or the plain baseline (default: ``True``).
        depth: linear layers of the primary MLP (default: ``5``).
        seeds: seeds of the reproduce sweep (default: ``3``).
    """

    steps: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    n_gamma: int = 256
    n_x: int = 32
    mip: bool = True
    depth: int = 5
    seeds: int = 3


class _GammaSine(torch.utils.data.Dataset):
    def __init__(self, cfg: MIPConfig, split: str) -> None:
        from invariance.optim.data import make_gamma_sine

        off = {"train": 0, "val": 1, "test": 2}[split]
        self.d = make_gamma_sine(cfg.n_gamma, cfg.n_x, seed=cfg.seed * 10 + off)

    def __len__(self) -> int:
        return self.d["gamma"].shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, Tensor]:
        return self.d["gamma"][i], self.d["x"][i], self.d["y"][i]


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
    """MIP hypernetwork on γ-conditioned regression; reproduce: learning-rate robustness sweep."""

    Config = MIPConfig
    presets = {"tiny": {}, "full": {"steps": 300, "seeds": 3}}
    unused_parameters = ("primary.",)

    def make_data(self, cfg: MIPConfig, split: str) -> torch.utils.data.Dataset:
        return _GammaSine(cfg, split)

    def build(self, cfg: MIPConfig) -> nn.Module:
        return HyperNet(
            _sine_primary(cfg.depth),
            cond_dim=1,
            mip=cfg.mip,
            generator=torch.Generator().manual_seed(cfg.seed),
        )

    def optimizer(self, cfg: MIPConfig, model: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

    def step(self, model: nn.Module, batch: Any) -> dict[str, Tensor]:
        gamma, x, y = batch
        return {"loss": (model(gamma, x) - y).pow(2).mean()}

    def check(self, model: nn.Module, cfg: MIPConfig) -> list[CheckResult]:
        from invariance.core.groups import Scaling
        from invariance.core.testing import check_equivariant, check_invariant, check_not_invariant

        gamma = torch.rand(8, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        grp = Scaling(0.1, 1.0)  # keeps gamma in [0, 1]
        norm = lambda z: encode_cos_sin(z).norm(dim=-1)
        base = HyperNet(
            _sine_primary(), cond_dim=1, mip=False, generator=torch.Generator().manual_seed(0)
        ).double()
        return [
            check_invariant(
                "MIP encoding norm invariant to gamma scale",
                norm,
                (gamma,),
                grp,
                ("scale",),
                tol=1e-12,
            ),
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
                _as64(model).predict_flat,
                (gamma,),
                grp,
                ("scale",),
                "scale",
            ),
        ]

    def reproduce(self, cfg: Any, run: Any, *, quick: bool) -> ReproduceResult:
        """The paper-analog experiment (single-threaded: the models are tiny)."""
        from invariance.optim._utils import threads

        with threads(1):
            return self._reproduce(cfg, run, quick=quick)

    def _reproduce(self, cfg: MIPConfig, run: Any, *, quick: bool) -> ReproduceResult:
        import time

        t0 = time.time()
        lrs = [1e-4, 3e-4, 1e-3, 3e-3]
        seeds = list(range(1 if quick else cfg.seeds))
        steps = 200 if quick else max(cfg.steps, 300)
        names = ("mip", "baseline")
        test: dict[str, dict[float, list[float]]] = {n: {} for n in names}
        final: dict[str, dict[float, list[float]]] = {n: {} for n in names}
        curves: dict[str, dict[float, list[float]]] = {n: {} for n in names}
        for lr in lrs:
            for name in names:
                rs = [
                    _train_gamma_regression(
                        mip=name == "mip", seed=s, steps=steps, lr=lr, depth=cfg.depth
                    )
                    for s in seeds
                ]
                test[name][lr] = [r["test_loss"] for r in rs]
                final[name][lr] = [r["train_loss_final"] for r in rs]
                curves[name][lr] = rs[0]["curve"]
        mean = {n: {lr: sum(v) / len(v) for lr, v in d.items()} for n, d in test.items()}
        ratios = {
            str(lr): {
                "held_out": [m / b for m, b in zip(test["mip"][lr], test["baseline"][lr])],
                "final_train": [m / b for m, b in zip(final["mip"][lr], final["baseline"][lr])],
            }
            for lr in lrs
        }
        plots = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
            for n, st in (("mip", "-o"), ("baseline", "--s")):
                ax[0].plot(lrs, [mean[n][lr] for lr in lrs], st, label=n)
            ax[0].set(
                xscale="log",
                yscale="log",
                xlabel="Adam lr",
                ylabel="held-out MSE",
                title=f"after {steps} steps, {len(seeds)} seed(s)",
            )
            ax[0].legend()
            for n, st in (("mip", "-"), ("baseline", "--")):
                ax[1].plot(curves[n][3e-3], st, label=f"{n} lr=3e-3")
            ax[1].set(yscale="log", xlabel="step", ylabel="train MSE (seed 0)")
            ax[1].legend()
            plots.append(run.savefig(fig, "mip_lr_sweep"))
        except ImportError:
            pass
        avg = {n: sum(mean[n].values()) / len(lrs) for n in mean}
        return ReproduceResult(
            task=(
                f"gamma-conditioned sine regression, primary depth {cfg.depth}, lr sweep {lrs}, "
                f"{steps} steps"
            ),
            metric="held-out MSE (mean over the lr sweep)",
            method="mip",
            baseline="kaiming_hypernet",
            method_value=avg["mip"],
            baseline_value=avg["baseline"],
            higher_is_better=False,
            seconds=time.time() - t0,
            details={
                "per_lr": {n: {str(k): v for k, v in d.items()} for n, d in mean.items()},
                "held_out_per_seed": {
                    n: {str(k): v for k, v in d.items()} for n, d in test.items()
                },
                "final_train_per_seed": {
                    n: {str(k): v for k, v in d.items()} for n, d in final.items()
                },
                "ratio_mip_over_baseline": ratios,
                "seeds": len(seeds),
                "steps": steps,
                "depth": cfg.depth,
            },
            plots=plots,
        )


def _as64(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model).double()
