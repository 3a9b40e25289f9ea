"""Vector-neuron layers (Deng et al., ICCV 2021, "Vector Neurons: A General Framework for
SO(3)-Equivariant Networks"), in the form PARE-Net uses them.

Features are ``(..., C, 3)`` tensors (C vector channels); every linear map mixes channels only, so
a rotation ``x -> x @ R.T`` commutes with it. :class:`VNLeakyReLU` keeps a vector when it points
along a learned direction and otherwise removes its component along that direction (mixed with a
slope); :class:`VNLinearLeakyReLU` applies a linear map, unit-normalises each channel (the clamp
acts on the invariant norm, so the layer stays exactly equivariant) and the VN leaky ReLU with a
direction computed from the input.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["VNLinear", "VNLeakyReLU", "VNLinearLeakyReLU", "unit_channels", "check_vn"]

_EPS = 1e-12


def check_vn(x: Tensor, name: str, channels: int | None = None) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., C, 3), got {tuple(x.shape)}")
    if channels is not None and x.shape[-2] != channels:
        raise ValueError(f"{name} must have {channels} vector channels, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def check_channels(**kw: int) -> None:
    for name, v in kw.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")


def unit_channels(x: Tensor) -> Tensor:
    """Unit-normalise each vector channel; the clamp acts on the (invariant) norm only."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(_EPS)


class VNLinear(nn.Module):
    """Channel-mixing linear map ``(..., C_in, 3) -> (..., C_out, 3)`` (no bias: equivariant)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        check_channels(in_channels=in_channels, out_channels=out_channels)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, x: Tensor) -> Tensor:
        check_vn(x, "x", self.in_channels)
        return torch.einsum("oc,...cd->...od", self.weight, x)

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}"


def _vn_leaky(x: Tensor, d: Tensor, slope: float) -> Tensor:
    dot = (x * d).sum(-1, keepdim=True)
    dd = (d * d).sum(-1, keepdim=True).clamp_min(_EPS)
    keep = (dot >= 0).to(x.dtype)
    proj = x - (dot / dd) * d
    return slope * x + (1 - slope) * (keep * x + (1 - keep) * proj)


class VNLeakyReLU(nn.Module):
    """Vector-neuron leaky ReLU with a learned direction per channel (``slope`` 0.2)."""

    def __init__(self, channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        check_channels(channels=channels)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope}")
        self.channels, self.slope = channels, float(slope)
        self.direction = VNLinear(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        check_vn(x, "x", self.channels)
        return _vn_leaky(x, self.direction(x), self.slope)


class VNLinearLeakyReLU(nn.Module):
    """``VNLinear`` -> unit-normalised channels -> VN leaky ReLU (direction from the input)."""

    def __init__(self, in_channels: int, out_channels: int, *, slope: float = 0.2) -> None:
        super().__init__()
        check_channels(in_channels=in_channels, out_channels=out_channels)
        if not 0.0 <= slope < 1.0:
            raise ValueError(f"slope must be in [0, 1), got {slope}")
        self.in_channels, self.slope = in_channels, float(slope)
        self.linear = VNLinear(in_channels, out_channels)
        self.direction = VNLinear(in_channels, out_channels)

    def normalize(self, p: Tensor) -> Tensor:
        return unit_channels(p)

    def forward(self, x: Tensor) -> Tensor:
        check_vn(x, "x", self.in_channels)
        return _vn_leaky(self.normalize(self.linear(x)), self.direction(x), self.slope)
