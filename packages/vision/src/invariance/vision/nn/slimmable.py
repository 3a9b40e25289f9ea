"""Slimmable layers (Yu et al., *Slimmable Neural Networks*, ICLR 2019): one set of weights run
at several widths. A :class:`SlimConv2d` of full width ``C_out`` run at width multiplier ``w``
uses its first ``ceil(w * C_out)`` filters and the first ``C_in'`` input channels, where ``C_in'``
is the channel count of its input; :class:`SwitchableBatchNorm2d` keeps one BatchNorm per width
(the classic slimmable pitfall is sharing BN statistics across widths)."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from invariance.vision._checks import check_number, check_tensor

__all__ = ["width_channels", "SlimConv2d", "SwitchableBatchNorm2d", "SlimLinear"]


def width_channels(channels: int, width: float) -> int:
    """``ceil(width * channels)`` (at least 1), robust to float round-off."""
    check_number(width, "width", lo=0.0, hi=1.0, lo_open=True)
    return max(1, math.ceil(round(width * channels, 6)))


def _check_in(x: Tensor, full: int, name: str = "x") -> None:
    check_tensor(x, name, dims=(2, 4))
    if x.shape[1] > full:
        raise ValueError(f"{name} has {x.shape[1]} channels, more than the layer's {full}")


class SlimConv2d(nn.Conv2d):
    """``nn.Conv2d`` that runs at a width multiplier: ``forward(x, width)`` uses
    ``weight[:ceil(width * out_channels), :x.shape[1]]`` and the matching bias. With
    ``fixed_out=True`` (task output layers) every output channel is always used."""

    def __init__(self, *args, fixed_out: bool = False, **kw) -> None:
        super().__init__(*args, **kw)
        self.fixed_out = fixed_out

    def forward(self, x: Tensor, width: float = 1.0) -> Tensor:  # type: ignore[override]
        _check_in(x, self.in_channels)
        if x.dim() != 4:
            raise ValueError(f"x must have 4 dimensions (n, C, H, W), got {tuple(x.shape)}")
        c_out = self.out_channels if self.fixed_out else width_channels(self.out_channels, width)
        w = self.weight[:c_out, : x.shape[1]]
        b = self.bias[:c_out] if self.bias is not None else None
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            return F.conv2d(x, w, b, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, b, self.stride, self.padding, self.dilation, self.groups)


class SlimLinear(nn.Linear):
    """``nn.Linear`` over the first ``x.shape[1]`` input features (all outputs kept)."""

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        _check_in(x, self.in_features)
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


class SwitchableBatchNorm2d(nn.Module):
    """One ``BatchNorm2d`` per width in ``widths`` (sized ``ceil(w * channels)``); the one whose
    size matches the input's channels is used."""

    def __init__(self, channels: int, widths: tuple[float, ...]) -> None:
        super().__init__()
        sizes = sorted({width_channels(channels, w) for w in widths})
        self.sizes = sizes
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in sizes)

    def forward(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", dims=4)
        c = x.shape[1]
        if c not in self.sizes:
            raise ValueError(f"x has {c} channels; this layer was built for widths {self.sizes}")
        return self.bns[self.sizes.index(c)](x)
