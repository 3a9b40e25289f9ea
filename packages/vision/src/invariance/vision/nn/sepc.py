r"""Pyramid convolution, integrated BN and the SEPC neck (Wang et al., CVPR 2020).

"Scale-Equalizing Pyramid Convolution for Object Detection", arXiv:2005.03101. Official code:
https://github.com/jshilong/SEPC (Apache-2.0; mmdetection 1.x + CUDA deformable conv). This is a
re-implementation on torchvision ops (``deform_conv2d``), cross-read against
``sepc/self_mmdet/models/necks/sepc.py`` and ``ops/dcn/sepc_dconv.py``; no code was copied.

Pyramid convolution: three 3x3 kernels shared by every level. For output level :math:`l`,

.. math::
    y_l = w_{same} * x_l + \mathrm{Up}(w_{up} * x_{l+1}) + (w_{down} *_{s=2} x_{l-1}),

with absent neighbours dropped and Up = bilinear with ``align_corners=True`` to the size of
:math:`y_l`. Integrated BN (iBN) flattens every level to (N, C, 1, H_l W_l), concatenates them
and applies ONE BatchNorm2d, so statistics come from the whole pyramid. Scale equalisation: each
shared conv has a zero-initialised offset conv (3x3, same stride/padding, 18 outputs) and, for
output levels >= ``start_level`` (=1: P4..P7), runs as a deformable conv v1 with the SAME kernel;
level 0 (P3) uses the plain conv.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from invariance.vision._checks import check_int

__all__ = ["SEPCConv", "PyramidConv", "SEPC", "integrated_bn"]


def _check_pyramid(x: Sequence[Tensor], channels: int, name: str) -> None:
    """Validate a list of (N, C, H_l, W_l) feature maps."""
    if not isinstance(x, (list, tuple)) or len(x) < 2:
        raise TypeError(
            f"{name} expects a list of >= 2 feature maps, got {type(x).__name__}"
            + (f" of length {len(x)}" if isinstance(x, (list, tuple)) else "")
        )
    for i, t in enumerate(x):
        if not isinstance(t, Tensor) or t.dim() != 4:
            raise ValueError(
                f"{name}: level {i} must be a (N, C, H, W) tensor, got "
                f"{getattr(t, 'shape', type(t).__name__)}"
            )
        if t.shape[1] != channels or t.shape[0] != x[0].shape[0]:
            raise ValueError(
                f"{name}: level {i} has shape {tuple(t.shape)}, expected "
                f"({x[0].shape[0]}, {channels}, H, W)"
            )
        if not t.is_floating_point():
            raise TypeError(f"{name}: level {i} of x must be a floating tensor, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{name}: level {i} of x is empty, shape {tuple(t.shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: level {i} of x holds NaN or inf")


def integrated_bn(feats: Sequence[Tensor], bn: nn.BatchNorm2d) -> list[Tensor]:
    """One BatchNorm over the whole pyramid: (N, C, H_l, W_l) list -> same shapes."""
    n, c = feats[0].shape[:2]
    sizes = [f.shape[-2:] for f in feats]
    flat = torch.cat([f.reshape(n, c, 1, -1) for f in feats], dim=-1)
    out = bn(flat).split([h * w for h, w in sizes], dim=-1)
    return [o.reshape(n, c, h, w) for o, (h, w) in zip(out, sizes)]


class SEPCConv(nn.Module):
    """A level-shared 3x3 conv that becomes a deformable conv (v1) for output levels >=
    ``start_level`` when ``deform=True``; the offset conv is zero-initialised.

    Args:
        in_channels (int), out_channels (int), stride (int, default: 1),
        deform (bool): use the deformable path on high levels (default: False),
        start_level (int): first level using it (default: 1).

    Shapes: (N, C_in, H, W) -> (N, C_out, ceil(H / stride), ceil(W / stride)).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        deform: bool = False,
        start_level: int = 1,
    ) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.deform, self.start_level = stride, deform, start_level
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.empty(out_channels))
        self.offset = nn.Conv2d(in_channels, 18, 3, stride=stride, padding=1) if deform else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.normal_(self.weight, std=0.01)
        nn.init.zeros_(self.bias)
        if self.offset is not None:
            nn.init.zeros_(self.offset.weight)
            nn.init.zeros_(self.offset.bias)

    def forward(self, level: int, x: Tensor) -> Tensor:
        if self.offset is None or level < self.start_level:
            return torch.nn.functional.conv2d(
                x, self.weight, self.bias, stride=self.stride, padding=1
            )
        offset = self.offset(x)
        # torchvision's CPU deform_conv2d kills the process (SIGSEGV) on NaN/inf input or
        # offsets: refuse them here with an error instead
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"SEPCConv: input x at level {level} holds NaN or inf (the "
                "deformable conv would crash on it)"
            )
        if not bool(torch.isfinite(offset).all()):
            raise ValueError(
                f"SEPCConv: offsets at level {level} hold NaN or inf (non-finite "
                "offset-conv weights?); the deformable conv would crash on them"
            )
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=1)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, stride={self.stride}, "
            f"deform={self.deform}, start_level={self.start_level}"
        )


class PyramidConv(nn.Module):
    r"""Pyramid convolution module (PConv) of SEPC, `arXiv:2005.03101
    <https://arxiv.org/abs/2005.03101>`_, followed by optional iBN and ReLU.

    Args:
        channels (int): channels of every level (default: 256).
        ibn (bool): integrated BN over the pyramid (default: False).
        deform (bool): deformable kernels on levels >= 1 (default: False).
        relu (bool): apply ReLU at the end (default: True).

    Shapes:
        list of L maps (N, C, H_l, W_l) with H_{l+1} = ceil(H_l / 2) -> same shapes.

    Invariance:
        level-shift (scale) equivariance: for the shifted pyramid x' = (x_1, .., x_L),
        PConv(x')_l = PConv(x)_{l+1} for 1 <= l <= L - 3 (exactly; with iBN in eval mode).
    """

    def __init__(
        self, *, channels: int = 256, ibn: bool = False, deform: bool = False, relu: bool = True
    ) -> None:
        super().__init__()
        self.channels, self.ibn, self.deform, self.relu = channels, ibn, deform, relu
        c = channels
        self.up = SEPCConv(in_channels=c, out_channels=c, deform=deform)
        self.same = SEPCConv(in_channels=c, out_channels=c, deform=deform)
        self.down = SEPCConv(in_channels=c, out_channels=c, stride=2, deform=deform)
        self.bn = nn.BatchNorm2d(c) if ibn else None

    def reset_parameters(self) -> None:
        for m in (self.up, self.same, self.down):
            m.reset_parameters()
        if self.bn is not None:
            self.bn.reset_parameters()

    def forward(self, x: Sequence[Tensor]) -> list[Tensor]:
        _check_pyramid(x, self.channels, "PyramidConv")
        out = []
        for lvl, feat in enumerate(x):
            y = self.same(lvl, feat)
            if lvl > 0:
                y = y + self.down(lvl, x[lvl - 1])
            if lvl < len(x) - 1:
                y = y + torch.nn.functional.interpolate(
                    self.up(lvl, x[lvl + 1]), size=y.shape[-2:], mode="bilinear", align_corners=True
                )
            out.append(y)
        if self.bn is not None:
            out = integrated_bn(out, self.bn)
        return [torch.relu(o) for o in out] if self.relu else out

    def extra_repr(self) -> str:
        return f"channels={self.channels}, ibn={self.ibn}, deform={self.deform}"


class SEPC(nn.Module):
    """SEPC neck: ``num_pconv`` stacked :class:`PyramidConv`, then two level-shared head convs
    (``cconv`` for classification, ``lconv`` for localisation), each with its own iBN and ReLU.

    Variants (``variant``): ``"pconv"`` (no iBN, no deform), ``"ibn"`` (iBN), ``"sepc_lite"``
    (iBN, deform only in cconv/lconv) and ``"sepc"`` (iBN, deform everywhere).

    Args:
        channels (int): channels (default: 256).
        num_pconv (int): stacked pyramid convolutions (default: 4).
        variant (str): see above (default: ``"sepc"``).

    Shapes:
        list of L maps (N, C, H_l, W_l) -> (cls_feats, loc_feats), two lists of the same shapes.

    Invariance:
        level-shift equivariance away from the pyramid's top and bottom (see PyramidConv).
    """

    VARIANTS = {
        "pconv": (False, False, False),
        "ibn": (True, False, False),
        "sepc_lite": (True, False, True),
        "sepc": (True, True, True),
    }

    def __init__(self, *, channels: int = 256, num_pconv: int = 4, variant: str = "sepc") -> None:
        super().__init__()
        if variant not in self.VARIANTS:
            raise ValueError(f"variant must be one of {sorted(self.VARIANTS)}, got {variant!r}")
        check_int(channels, "channels")
        check_int(num_pconv, "num_pconv", lo=0)
        if num_pconv < 0:
            raise ValueError(f"num_pconv must be >= 0, got {num_pconv}")
        ibn, pdeform, hdeform = self.VARIANTS[variant]
        self.channels, self.num_pconv, self.variant = channels, num_pconv, variant
        self.pconvs = nn.ModuleList(
            PyramidConv(channels=channels, ibn=ibn, deform=pdeform) for _ in range(num_pconv)
        )
        self.cconv = SEPCConv(in_channels=channels, out_channels=channels, deform=hdeform)
        self.lconv = SEPCConv(in_channels=channels, out_channels=channels, deform=hdeform)
        self.cbn = nn.BatchNorm2d(channels) if ibn else None
        self.lbn = nn.BatchNorm2d(channels) if ibn else None

    def reset_parameters(self) -> None:
        for m in [*self.pconvs, self.cconv, self.lconv]:
            m.reset_parameters()
        for bn in (self.cbn, self.lbn):
            if bn is not None:
                bn.reset_parameters()

    def forward(self, x: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        _check_pyramid(x, self.channels, "SEPC")
        for pconv in self.pconvs:
            x = pconv(x)
        cls = [self.cconv(lvl, f) for lvl, f in enumerate(x)]
        loc = [self.lconv(lvl, f) for lvl, f in enumerate(x)]
        if self.cbn is not None:
            cls = integrated_bn(cls, self.cbn)
            loc = integrated_bn(loc, self.lbn)
        return [torch.relu(c) for c in cls], [torch.relu(c) for c in loc]

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_pconv={self.num_pconv}, variant={self.variant!r}"
