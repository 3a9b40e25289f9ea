"""PARE-Net's layers (see :mod:`invariance.geometry.pare_net` for the paper, the mechanism, the
tested properties and the deviations): the position-aware channels, the position-aware
rotation-equivariant convolution :class:`PAREConv` and the invariant head by a learned
Gram-Schmidt frame :class:`VNInvariantHead`."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .vector_neurons import (
    VNLeakyReLU,
    VNLinear,
    VNLinearLeakyReLU,
    check_channels,
    check_vn,
    unit_channels,
)

__all__ = ["position_aware_channels", "PAREConv", "VNInvariantHead"]


def position_aware_channels(rel: Tensor) -> Tensor:
    """``(M, k, 3)`` neighbour offsets -> ``(M, k, 3, 3)`` channels ``[r_k, c, r_k x c]``."""
    c = rel.mean(dim=1, keepdim=True).expand_as(rel)
    return torch.stack([rel, c, torch.linalg.cross(rel, c, dim=-1)], dim=-2)


class PAREConv(nn.Module):
    """Position-aware rotation-equivariant convolution (see the module docstring).

    Args:
        in_channels: vector channels of the input features (``0`` for the first block, which
            sees only the position-aware channels).
        out_channels: vector channels of the output (even).
        kernel_size: K, the number of kernel points of the weight bank (default: ``4``).
        residual: the residual form (input ``[f_k - f_q, f_k, r_k]`` and a shortcut).

    Shapes: ``pos`` ``(N, 3)`` support points, ``query`` ``(M, 3)``, ``idx`` ``(M, k)`` neighbour
    indices into ``pos`` (the first one is the query itself, or its nearest support point),
    ``feats`` ``(N, C_in, 3)`` (``None`` for the first block) -> ``(M, C_out, 3)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 4,
        residual: bool = False,
        slope: float = 0.2,
    ) -> None:
        super().__init__()
        check_channels(out_channels=out_channels, kernel_size=kernel_size)
        if out_channels % 2:
            raise ValueError(f"out_channels must be even, got {out_channels}")
        if residual and (not isinstance(in_channels, int) or in_channels < 1):
            raise ValueError(f"in_channels must be >= 1 for a residual block, got {in_channels!r}")
        if not residual and in_channels != 0:
            raise ValueError(
                "the first (non-residual) block takes no input features: in_channels=0"
            )
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.residual = kernel_size, residual
        k2 = 2 * kernel_size
        self.score_vn = VNLinearLeakyReLU(3, k2, slope=slope)
        self.score_mlp = nn.Sequential(
            nn.Linear(k2, kernel_size),
            nn.BatchNorm1d(kernel_size),
            nn.ReLU(),
            nn.Linear(kernel_size, kernel_size),
        )
        cin = 2 * in_channels + 1 if residual else 3
        half = out_channels // 2
        self.bank = nn.Parameter(torch.empty(kernel_size, half, cin))
        self.act = VNLeakyReLU(half, slope=slope)
        self.out = VNLinearLeakyReLU(half, out_channels, slope=slope)
        self.shortcut = VNLinear(in_channels, out_channels) if residual else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.bank, a=math.sqrt(5))

    def forward(
        self, pos: Tensor, query: Tensor, idx: Tensor, feats: Tensor | None = None
    ) -> Tensor:
        for name, t in (("pos", pos), ("query", query)):
            if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[-1] != 3:
                raise ValueError(f"{name} must be an (N, 3) tensor")
            if not t.is_floating_point() or not torch.isfinite(t).all():
                raise ValueError(f"{name} must be a finite floating tensor")
        if not isinstance(idx, Tensor) or idx.dtype != torch.long or idx.dim() != 2:
            raise TypeError("idx must be an (M, k) int64 tensor of neighbour indices")
        if idx.shape[0] != query.shape[0] or idx.shape[1] < 1:
            raise ValueError(f"idx {tuple(idx.shape)} must have one row per query point")
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= pos.shape[0]):
            raise ValueError(f"idx must index the {pos.shape[0]} support points")
        rel = pos[idx] - query[:, None, :]  # (M, k, 3)
        lk = position_aware_channels(rel)  # (M, k, 3, 3)
        z = self.score_vn(lk).norm(dim=-1)  # (M, k, 2K) invariant
        M, k = idx.shape
        s = self.score_mlp(z.reshape(M * k, -1)).reshape(M, k, -1).softmax(dim=-1)
        if self.residual:
            if feats is None:
                raise ValueError("feats is required for a residual block")
            check_vn(feats, "feats", self.in_channels)
            if feats.shape[0] != pos.shape[0]:
                raise ValueError(f"feats must have one row per support point ({pos.shape[0]})")
            fk = feats[idx]  # (M, k, C, 3)
            fq = feats[idx[:, :1]].expand_as(fk)
            x = torch.cat([fk - fq, fk, rel.unsqueeze(-2)], dim=-2)
        else:
            x = lk
        w = torch.einsum("mkq,qoc->mkoc", s, self.bank)  # per-neighbour mixing weights
        y = unit_channels(torch.einsum("mkoc,mkcd->mkod", w, x)).mean(dim=1)
        y = self.out(self.act(y))
        if self.shortcut is not None:
            y = y + self.shortcut(feats[idx[:, 0]])
        return y


class VNInvariantHead(nn.Module):
    """Invariant features by a learned equivariant frame (``VNStdFeature``).

    ``(..., C, 3)`` -> ``(..., C, 3)`` SO(3)-invariant (flatten for a descriptor); ``frame`` is
    the ``(..., 3, 3)`` rows ``u1, u2, u3``."""

    def __init__(self, channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        check_channels(channels=channels)
        if channels < 8:  # the frame needs two independent vectors: channels // 4 >= 2
            raise ValueError(f"channels must be >= 8, got {channels}")
        self.channels = channels
        self.net = nn.Sequential(
            VNLinearLeakyReLU(channels, channels // 2, slope=slope),
            VNLinearLeakyReLU(channels // 2, channels // 4, slope=slope),
        )
        self.to_frame = VNLinear(channels // 4, 2)

    def frame(self, x: Tensor) -> Tensor:
        v = self.to_frame(self.net(x))
        u1 = unit_channels(v[..., 0, :])
        u2 = unit_channels(v[..., 1, :] - (v[..., 1, :] * u1).sum(-1, keepdim=True) * u1)
        u3 = torch.linalg.cross(u1, u2, dim=-1)
        return torch.stack([u1, u2, u3], dim=-2)

    def forward(self, x: Tensor) -> Tensor:
        check_vn(x, "x", self.channels)
        return x @ self.frame(x).transpose(-1, -2)
