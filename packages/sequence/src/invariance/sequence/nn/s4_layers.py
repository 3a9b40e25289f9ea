r"""The S4 layer (kernel convolution, skip, activation, tied dropout) and a small S4 encoder.

Papers: "Efficiently Modeling Long Sequences with Structured State Spaces" (S4, Gu, Goel, Ré,
ICLR 2022, arXiv:2111.00396); "On the Parameterization and Initialization of Diagonal State Space
Models" (S4D, arXiv:2206.11893); "How to Train Your HiPPO" (HTTYH, ICLR 2023, arXiv:2206.12037).
Official code: https://github.com/state-spaces/s4 (Apache-2.0); read for conventions, not copied.
See :mod:`invariance.sequence.s4` for the method docstring (tested properties, deviations);
the kernels live in :mod:`invariance.sequence.nn.s4_kernels`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from invariance.sequence._checks import check_float, check_int, check_tensor
from invariance.sequence.nn.s4_kernels import (
    S4DKernel,
    S4Kernel,
    _check_seed,
    _seeded_linear_,
)
from invariance.sequence.nn.ssm_kernels import fft_conv

__all__ = ["S4DKernel", "S4Kernel", "S4Layer", "S4Model", "TiedDropout", "ssm_param_groups"]


class TiedDropout(nn.Module):
    r"""Dropout with one mask per (sample, channel), shared along the sequence: input (B, L, H),
    mask (B, 1, H), kept entries scaled by :math:`1/(1-p)`. The official S4/S4D layers'
    ``DropoutNd(tie=True)`` (written here from its description: a whole channel is dropped for a
    whole sequence). Identity in eval mode.

    Args:
        p (float): drop probability in [0, 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = check_float("p", p, 0.0, 1.0, hi_open=True)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 2)), x.shape[-1], device=x.device)
        return x * (keep >= self.p).to(x.dtype) / (1.0 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class S4Layer(nn.Module):
    r"""S4 layer: SSM convolution + skip :math:`D`, GELU, dropout, position-wise linear + GLU.

    .. math::  y = \mathrm{GLU}(W\,\mathrm{GELU}(K * u + D \odot u) + b)

    Args:
        d_model (int): channels H.
        d_state (int, optional): state size N. (default: 64)
        kernel (str, optional): ``"s4d"`` (diagonal, Vandermonde) or ``"s4"`` (DPLR, Cauchy).
            (default: ``"s4d"``)
        l_max (int, optional): maximum length, required for ``kernel="s4"``. (default: None)
        bidirectional (bool, optional): add an anti-causal kernel (non-causal layer). (default:
            False)
        dropout (float, optional): dropout after the activation. (default: 0.0)
        tie_dropout (bool, optional): one dropout mask per (sample, channel) shared along the
            sequence (:class:`TiedDropout`, as the official standalone S4D layer's
            ``DropoutNd``); ``False`` uses ``nn.Dropout`` (independent per position, as the
            official ``S4Block`` default). (default: True)
        seed (int, optional): seeds *every* parameter of the layer: the kernel's init (C, Δ,
            random A), the skip ``D`` and the output linear map. (default: None = global RNG)
        circular (bool, optional): FFT without zero padding, a deliberately *broken* variant whose
            convolution wraps around (negative control of the causality tests). (default: False)
        **kernel_kwargs: passed to :class:`S4DKernel` / :class:`S4Kernel` (``init``, ``measure``,
            ``dt_min``, ``dt_max``, ``disc``, ...).

    Shapes:
        input (B, L, H), output (B, L, H).

    Invariance:
        causal layers are equivariant to delays :math:`u_t \mapsto u_{t-s}` (zero-filled), up to
        the constant response to zeros in the first ``s`` outputs: :math:`f(\mathrm{delay}_s u) =
        \mathrm{delay}_s^{f(0)} f(u)`.
    """

    def __init__(
        self,
        d_model: int,
        *,
        d_state: int = 64,
        kernel: str = "s4d",
        l_max: int | None = None,
        bidirectional: bool = False,
        dropout: float = 0.0,
        tie_dropout: bool = True,
        circular: bool = False,
        seed: int | None = None,
        **kernel_kwargs: Any,
    ) -> None:
        super().__init__()
        if kernel not in ("s4d", "s4"):
            raise ValueError(f"kernel must be 's4d' or 's4', got {kernel!r}")
        check_int("d_model", d_model, 1)
        check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
        _check_seed(seed)
        self.seed = seed
        self.d_model, self.bidirectional, self.circular, self.kernel_type = (
            d_model,
            bidirectional,
            circular,
            kernel,
        )
        channels = 2 if bidirectional else 1
        if kernel == "s4":
            if l_max is None:
                raise ValueError("kernel='s4' needs l_max (the length C~ is built for)")
            self.kernel = S4Kernel(
                d_model, d_state=d_state, l_max=l_max, channels=channels, seed=seed, **kernel_kwargs
            )
        else:
            self.kernel = S4DKernel(
                d_model, d_state=d_state, channels=channels, seed=seed, **kernel_kwargs
            )
        self.D = nn.Parameter(torch.empty(d_model))
        self.activation = nn.GELU()
        if dropout > 0:
            self.dropout: nn.Module = TiedDropout(dropout) if tie_dropout else nn.Dropout(dropout)
        else:
            self.dropout = nn.Identity()
        self.output_linear = nn.Linear(d_model, 2 * d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``D`` and the output map (from ``seed`` when given; the kernel is seeded by
        the same ``seed`` in its own constructor)."""
        g = None if self.seed is None else torch.Generator().manual_seed(int(self.seed) + 1)
        with torch.no_grad():
            self.D.copy_(torch.randn(self.d_model, generator=g))
        _seeded_linear_(self.output_linear, g)

    def _check(self, u: Tensor) -> None:
        check_tensor("u", u, floating=True)
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"u must have shape (B, L, {self.d_model}), got {tuple(u.shape)}")

    def _post(self, y: Tensor) -> Tensor:
        return F.glu(self.output_linear(self.dropout(self.activation(y))), dim=-1)

    def forward(self, u: Tensor) -> Tensor:
        self._check(u)
        L = u.shape[1]
        k = self.kernel(L)  # (c, H, L)
        x = u.transpose(1, 2)
        y = fft_conv(x, k.to(x.dtype), bidirectional=self.bidirectional, circular=self.circular)
        y = y + x * self.D.unsqueeze(-1)
        return self._post(y.transpose(1, 2))

    @torch.no_grad()
    def forward_recurrent(self, u: Tensor) -> Tensor:
        """The same map computed by stepping the recurrence (causal layers only)."""
        self._check(u)
        if self.bidirectional:
            raise ValueError("recurrent mode needs a causal layer (bidirectional=False)")
        params = self.kernel.step_params()
        state = self.kernel.default_state(u.shape[0]).to(params[0].dtype)
        ys = []
        for t in range(u.shape[1]):
            y, state = self.kernel.step(u[:, t].to(params[0].real.dtype), state, params)
            ys.append(y[:, 0])
        y = torch.stack(ys, dim=1).to(u.dtype) + u * self.D
        return self._post(y)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, kernel={self.kernel_type!r}, "
            f"bidirectional={self.bidirectional}"
        )


class S4Model(nn.Module):
    r"""Small S4 sequence encoder: linear encoder, ``n_layers`` pre-norm residual S4 layers, linear
    decoder, optional pooling. Usable as a drop-in ``(B, L, d_input) -> (B, L, d_output)`` encoder.

    Args:
        d_input (int): input features.
        d_output (int): output features.
        d_model (int, optional): width H. (default: 64)
        n_layers (int, optional): S4 layers. (default: 2)
        d_state (int, optional): state size N. (default: 64)
        kernel (str, optional): ``"s4d"`` | ``"s4"``. (default: ``"s4d"``)
        dropout (float, optional): dropout in each layer and after it. (default: 0.0)
        pool (str, optional): ``None`` (per step), ``"mean"`` (masked mean) or ``"last"``.
            (default: None)
        bidirectional (bool, optional): non-causal layers. (default: False)
        l_max (int, optional): maximum length (needed by ``kernel="s4"``). (default: None)
        seed (int, optional): seeds every parameter: layer i gets ``seed + i``, the encoder and
            decoder a stream of their own. (default: None = global RNG)
        **kernel_kwargs: passed to each layer's kernel.

    Shapes:
        x (B, L, d_input), mask (B, L) bool (True = valid; optional) -> (B, L, d_output), or
        (B, d_output) when pooled.

    Invariance:
        causal, unpooled: delay-equivariant as :class:`S4Layer`.
    """

    def __init__(
        self,
        d_input: int,
        d_output: int,
        *,
        d_model: int = 64,
        n_layers: int = 2,
        d_state: int = 64,
        kernel: str = "s4d",
        dropout: float = 0.0,
        pool: str | None = None,
        bidirectional: bool = False,
        l_max: int | None = None,
        seed: int | None = None,
        **kernel_kwargs: Any,
    ) -> None:
        super().__init__()
        if pool not in (None, "mean", "last"):
            raise ValueError(f"pool must be None, 'mean' or 'last', got {pool!r}")
        check_int("n_layers", n_layers, 1)
        check_int("d_input", d_input, 1)
        check_int("d_output", d_output, 1)
        check_int("d_model", d_model, 1)
        check_float("dropout", dropout, 0.0, 1.0, hi_open=True)
        _check_seed(seed)
        self.d_input, self.d_output, self.pool = d_input, d_output, pool
        self.encoder = nn.Linear(d_input, d_model)
        self.layers = nn.ModuleList(
            [
                S4Layer(
                    d_model,
                    d_state=d_state,
                    kernel=kernel,
                    l_max=l_max,
                    bidirectional=bidirectional,
                    dropout=dropout,
                    seed=None if seed is None else seed + i,
                    **kernel_kwargs,
                )
                for i in range(n_layers)
            ]
        )
        self.norms = nn.ModuleList([nn.LayerNorm(d_model) for _ in range(n_layers)])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.decoder = nn.Linear(d_model, d_output)
        if seed is not None:  # encoder / decoder seeded too (the layers use seed + i)
            g = torch.Generator().manual_seed(int(seed) + 7919)
            _seeded_linear_(self.encoder, g)
            _seeded_linear_(self.decoder, g)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        check_tensor("x", x, floating=True)
        if x.dim() != 3 or x.shape[-1] != self.d_input:
            raise ValueError(f"x must have shape (B, L, {self.d_input}), got {tuple(x.shape)}")
        if mask is not None and mask.shape != x.shape[:2]:
            raise ValueError(f"mask must have shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
        h = self.encoder(x)
        for layer, norm in zip(self.layers, self.norms):
            h = h + self.dropout(layer(norm(h)))
        out = self.decoder(h)
        if self.pool is None:
            return out
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if self.pool == "mean":
            m = mask.to(out.dtype).unsqueeze(-1)
            return (out * m).sum(1) / m.sum(1).clamp_min(1.0)
        last = mask.long().sum(1).clamp_min(1) - 1
        return out[torch.arange(out.shape[0], device=out.device), last]


def ssm_param_groups(
    model: nn.Module, *, lr: float, weight_decay: float = 0.0, ssm_lr: float = 1e-3
) -> list[dict[str, Any]]:
    """AdamW parameter groups in the S4 recipe: SSM parameters (A, B, P, Δ) get ``ssm_lr`` and no
    weight decay; 1-D parameters (biases, norms, D) no weight decay; the rest
    ``lr``/``weight_decay``."""
    ssm_ids = {
        id(p)
        for m in model.modules()
        if isinstance(m, (S4DKernel, S4Kernel))
        for name, p in m.named_parameters()
        if name != "C"
    }
    ssm, no_decay, decay = [], [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in ssm_ids:
            ssm.append(p)
        elif p.dim() <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"params": ssm, "lr": ssm_lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
