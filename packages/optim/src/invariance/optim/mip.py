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

from invariance.optim._checks import check_choice, check_float, check_int, check_tensor

__all__ = ["HyperNet", "encode_cos_sin"]


_NORMS = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


def parameter_roles(primary: nn.Module) -> dict[str, str]:
    """The role of every parameter of ``primary``, read from the module that owns it.

    ``"scale"`` / ``"shift"``: the affine weight / bias of a normalization layer (BatchNorm,
    InstanceNorm, LayerNorm, GroupNorm, RMSNorm); ``"bias"``: a module's ``bias`` parameter;
    ``"weight"``: any other parameter with ``ndim >= 2``; ``"other"``: the rest (1-D or 0-D
    parameters of unknown role, e.g. RNN biases or layer scales).
    """
    roles: dict[str, str] = {}
    for mname, mod in primary.named_modules():
        for pname, p in mod.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if full in roles:
                continue
            if isinstance(mod, _NORMS) and p is getattr(mod, "weight", None):
                roles[full] = "scale"
            elif isinstance(mod, _NORMS) and p is getattr(mod, "bias", None):
                roles[full] = "shift"
            elif p is getattr(mod, "bias", None):
                roles[full] = "bias"
            elif p.ndim >= 2:
                roles[full] = "weight"
            else:
                roles[full] = "other"
    return roles


def encode_cos_sin(gamma: Tensor, *, warn: bool = True) -> Tensor:
    r"""MIP input encoding ``[cos(πγ/2), sin(πγ/2)]`` on the last dim: ``(..., k) -> (..., 2k)``.

    Its norm is ``sqrt(k)`` whatever ``γ``; values outside ``[0, 1]`` warn (the map is no longer
    one-to-one there).
    """
    check_tensor("gamma", gamma)
    if gamma.ndim < 1:
        raise ValueError(f"gamma must have at least 1 dimension, got shape {tuple(gamma.shape)}")
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
        check_int("cond_dim", cond_dim, 1)
        for h in hidden_sizes:
            check_int("hidden_sizes", h, 1)
        check_float("negative_slope", negative_slope)
        check_choice("theta0", theta0, ("kaiming", "primary"))
        self.primary = primary.requires_grad_(False)
        self.cond_dim, self.mip, self.theta0_init = int(cond_dim), bool(mip), theta0
        self.hidden_sizes = tuple(int(h) for h in hidden_sizes)
        self.negative_slope = float(negative_slope)
        self.shapes: dict[str, torch.Size] = {n: p.shape for n, p in primary.named_parameters()}
        self.roles = parameter_roles(primary)
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
                if self.roles[n] != "weight":
                    block.zero_()
                else:
                    kaiming(block, size)
            self.output.bias.copy_(self._theta0())
        else:
            # plain hypernetwork: Kaiming (fan-in) over the whole output layer, zero bias
            kaiming(W, W.shape[1])
            self.output.bias.zero_()

    def _theta0(self) -> Tensor:
        """θ0 by role: Kaiming-normal (fan-in) weights, zero biases and norm shifts, unit norm
        scales (a zero scale would make the primary start as a constant function), and the
        primary's own initial value for parameters of unknown role."""
        parts = []
        dtype = self.output.bias.dtype
        for n, p in self.primary.named_parameters():
            role = self.roles[n]
            if self.theta0_init == "primary" or role == "other":
                t = p.detach().to(dtype)
            elif role == "weight":
                fan_in = math.prod(p.shape[1:])
                t = torch.randn(p.shape, generator=self._gen, dtype=dtype) * math.sqrt(2.0 / fan_in)
            elif role == "scale":
                t = torch.ones(p.shape, dtype=dtype)
            else:  # bias, shift
                t = torch.zeros(p.shape, dtype=dtype)
            parts.append(t.reshape(-1).cpu())
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
        check_tensor("gamma", gamma)
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
        self._check_gamma(gamma)
        for i, a in enumerate(args):
            if (
                isinstance(a, Tensor)
                and a.is_floating_point()
                and not bool(torch.isfinite(a).all())
            ):
                raise ValueError(f"args[{i}], an input of the primary, contains NaN or inf")
            if (
                gamma.ndim == 2
                and isinstance(a, Tensor)
                and (a.ndim == 0 or a.shape[0] != len(gamma))
            ):
                raise ValueError(
                    f"gamma of shape {tuple(gamma.shape)} runs one primary per row: every input "
                    f"needs a leading dimension of {len(gamma)}, got args[{i}] of shape "
                    f"{tuple(a.shape)}"
                )
        params = self.predict(gamma)
        if gamma.ndim == 1:
            return functional_call(self.primary, params, args, kwargs)
        stateful = [
            n
            for n, m in self.primary.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.training
            and m.track_running_stats
        ]
        if stateful:
            raise ValueError(
                f"gamma of shape {tuple(gamma.shape)} (one primary per row) cannot drive the "
                f"primary's BatchNorm {stateful[:3]} in training mode: its running statistics "
                "would be shared by all rows. Call the hypernetwork once per gamma of shape "
                "(k,), put the primary in eval mode, or build the BatchNorm with "
                "track_running_stats=False"
            )

        def call(p: dict[str, Tensor], *a: Any) -> Any:
            return functional_call(self.primary, p, a, kwargs)

        return vmap(call)(params, *args)

    def extra_repr(self) -> str:
        return (
            f"cond_dim={self.cond_dim}, hidden_sizes={list(self.hidden_sizes)}, mip={self.mip}, "
            f"num_outputs={self.num_outputs}"
        )
