r"""Building blocks of the affine-equivariant group ResNet
(:mod:`invariance.geometry.affine_gresnet`): the SIREN kernel network, lifting and group
convolutions on R^2 x| H (H = GL+(2, R) or SL(2, R)), LayerNorm over (C, G, H, W), group max
pooling and the residual block.

See :mod:`invariance.geometry.affine_gresnet` for the paper (arXiv 2310.11366), the mechanism, the
tested properties and the deviations from the official code.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import lie

__all__ = [
    "SIREN",
    "AffineLiftConv2d",
    "AffineGroupConv2d",
    "GroupLayerNorm",
    "GroupMaxPool2d",
    "AffineResBlock",
    "kernel_grid",
]


def _check_int(name: str, v: object, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def _check_pos_float(name: str, v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be finite and > 0, got {v}")
    return float(v)


def kernel_grid(kernel_size: int) -> Tensor:
    """(2, k, k) pixel-centre coordinates in [-1, 1] (``affine_grid``, ``align_corners=False``):
    ``grid[:, r, c] = (x_c, y_r)``, x along the width, y along the height."""
    coords = F.affine_grid(
        torch.eye(2, 3, dtype=torch.float64)[None], [1, 1, kernel_size, kernel_size], False
    )[0]
    return coords.permute(2, 0, 1).contiguous()


# ----------------------------------------------------------------------------- kernel network


class SIREN(nn.Module):
    r"""SIREN kernel network: ``layers`` sine layers :math:`\sin(w_0 (W x + b))` then a linear
    map to ``out_features`` (the ``C_out * C_in`` kernel entries).

    Init as the paper's code: first layer U(±1/in), later U(±sqrt(6/in)/w0) with zero bias; final
    layer U(±sqrt(6/hidden)/sqrt(fan_in)) with ``fan_in = C_in k^2`` and zero bias.

    Args:
        in_features: input coordinates (2 + chart dimension, or 2 for lifting).
        out_features: kernel entries per point.
        hidden: width (default: ``60``).
        layers: sine layers, >= 1 (official ``num_hidden + 1``; default: ``3``).
        w0: frequency of every sine layer (default: ``10.0``).
        fan_in: fan-in of the produced kernel for the final init (default: ``1``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        hidden: int = 60,
        layers: int = 3,
        w0: float = 10.0,
        fan_in: int = 1,
    ) -> None:
        super().__init__()
        _check_int("in_features", in_features, 1)
        _check_int("out_features", out_features, 1)
        _check_int("hidden", hidden, 1)
        _check_int("layers", layers, 1)
        self.w0 = _check_pos_float("w0", w0)
        self.fan_in = _check_int("fan_in", fan_in, 1)
        dims = [in_features] + [hidden] * layers
        self.sines = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.out = nn.Linear(hidden, out_features)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for i, lin in enumerate(self.sines):
            if i == 0:
                lin.reset_parameters()
                lin.weight.uniform_(-1.0 / lin.in_features, 1.0 / lin.in_features)
            else:
                bound = math.sqrt(6.0 / lin.in_features) / self.w0
                lin.weight.uniform_(-bound, bound)
                lin.bias.zero_()
        bound = math.sqrt(6.0 / self.out.in_features) / math.sqrt(self.fan_in)
        self.out.weight.uniform_(-bound, bound)
        self.out.bias.zero_()

    def forward(self, x: Tensor) -> Tensor:
        for lin in self.sines:
            x = torch.sin(self.w0 * lin(x))
        return self.out(x)

    def forward_split(self, a: Tensor, b: Tensor) -> Tensor:
        """``forward(cat([a, b], -1))`` for broadcastable ``a`` (..., n_a) and ``b`` (..., n_b),
        without materialising the concatenation: the first layer is linear, so it is split."""
        first = self.sines[0]
        na = a.shape[-1]
        pre = F.linear(a, first.weight[:, :na]) + F.linear(b, first.weight[:, na:], first.bias)
        x = torch.sin(self.w0 * pre)
        for lin in self.sines[1:]:
            x = torch.sin(self.w0 * lin(x))
        return self.out(x)

    def extra_repr(self) -> str:
        return f"w0={self.w0}, fan_in={self.fan_in}"


def _check_samples(h: Tensor, name: str) -> None:
    lie._check_matrices(h, name, positive_det=False)
    if h.dim() != 3:
        raise ValueError(f"{name} must be (N, 2, 2), got {tuple(h.shape)}")


def _mask(points: Tensor, kind: str) -> Tensor:
    """(..., 2) kernel positions -> weights: hard unit disc (``"hard"``) or sigmoid(2 (1 - |p|))
    (``"smooth"``); ones for ``"none"``."""
    r = points.norm(dim=-1)
    if kind == "hard":
        return (r <= 1.0).to(points.dtype)
    if kind == "smooth":
        return torch.sigmoid(2.0 * (1.0 - r))
    return torch.ones_like(r)


class _GConvBase(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        group: str,
        kernel_size: int,
        padding: int,
        bias: bool,
        inr_hidden: int,
        inr_layers: int,
        w0: float,
        masked: bool,
        in_coords: int,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels, 1)
        self.out_channels = _check_int("out_channels", out_channels, 1)
        self.group = lie._check_group(group)
        self.kernel_size = _check_int("kernel_size", kernel_size, 1)
        self.padding = _check_int("padding", padding, 0)
        self.volume_preserving = group == "sl2"
        self.mask_kind = ("hard" if self.volume_preserving else "smooth") if masked else "none"
        self.kernel_net = SIREN(
            in_coords,
            out_channels * in_channels,
            hidden=inr_hidden,
            layers=inr_layers,
            w0=w0,
            fan_in=in_channels * kernel_size**2,
        )
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        # float64 so that .double() copies keep the exact grid; cast to the samples dtype on use
        self.register_buffer("grid", kernel_grid(kernel_size), persistent=False)

    def _points(self, h_inv: Tensor) -> Tensor:
        """(n, 2, 2) -> (n, k, k, 2): the grid mapped by each h^-1."""
        return torch.einsum("nij,jrc->nrci", h_inv, self.grid.to(h_inv.dtype))

    def _check_x(self, x: Tensor, dims: int) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a floating-point tensor, got {getattr(x, 'dtype', x)}")
        if x.dim() != dims or x.shape[1] != self.in_channels:
            want = "(B, C, H, W)" if dims == 4 else "(B, C, G, H, W)"
            raise ValueError(
                f"x must have shape {want} with C = {self.in_channels}, got {tuple(x.shape)}"
            )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, group={self.group}, "
            f"kernel_size={self.kernel_size}, padding={self.padding}, mask={self.mask_kind}, "
            f"bias={self.bias is not None}"
        )


class AffineLiftConv2d(_GConvBase):
    r"""Lifting convolution R^2 -> R^2 x| H for a sample set :math:`\{h_k\}` (given at call time).

    Args:
        in_channels, out_channels: channels.
        group: ``"gl2"`` or ``"sl2"`` (default: ``"sl2"``).
        kernel_size: odd grid size (default: ``5``). padding: zero padding (default: ``0``).
        bias: per output channel (default: ``False``).
        inr_hidden, inr_layers, w0: the :class:`SIREN` (defaults: ``60``, ``3``, ``10.0``).
        masked: unit-disc mask, hard for SL and smooth for GL (default: ``True``).

    Shapes: ``x`` (B, C_in, H, W), ``h_inv`` (N, 2, 2) -> (B, C_out, N, H', W').

    Invariance: equivariant, ``lift(L_g x, g h) = L_g lift(x, h)`` for linear ``g`` (exact when
    ``g`` maps the kernel grid and image grid onto themselves, e.g. rot90).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        group: str = "sl2",
        kernel_size: int = 5,
        padding: int = 0,
        bias: bool = False,
        inr_hidden: int = 60,
        inr_layers: int = 3,
        w0: float = 10.0,
        masked: bool = True,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            group=group,
            kernel_size=kernel_size,
            padding=padding,
            bias=bias,
            inr_hidden=inr_hidden,
            inr_layers=inr_layers,
            w0=w0,
            masked=masked,
            in_coords=2,
        )

    def kernel(self, h_inv: Tensor) -> Tensor:
        """(C_out, N, C_in, k, k) kernel for the samples' inverses ``h_inv`` (N, 2, 2)."""
        pts = self._points(h_inv)  # (N, k, k, 2)
        n, k = h_inv.shape[0], self.kernel_size
        w = self.kernel_net(pts)
        w = w * _mask(pts, self.mask_kind).unsqueeze(-1)
        if not self.volume_preserving:
            w = w * torch.linalg.det(h_inv).abs().view(n, 1, 1, 1)
        w = w.view(n, k, k, self.out_channels, self.in_channels)
        return w.permute(3, 0, 4, 1, 2)

    def forward(self, x: Tensor, h_inv: Tensor) -> Tensor:
        self._check_x(x, 4)
        _check_samples(h_inv, "h_inv")
        w = self.kernel(h_inv.to(x.dtype))
        n = w.shape[1]
        y = F.conv2d(
            x,
            w.reshape(-1, self.in_channels, self.kernel_size, self.kernel_size),
            padding=self.padding,
        )
        y = y.view(y.shape[0], self.out_channels, n, *y.shape[-2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y


class AffineGroupConv2d(_GConvBase):
    r"""Group convolution on R^2 x| H between input samples :math:`\{h_i\}` and output samples
    :math:`\{h_o\}` (given at call time): kernel :math:`k_\theta(h_o^{-1}x, \xi^{-1}(h_o^{-1}h_i))`
    divided by :math:`|\det h_i|` for GL.

    Args: as :class:`AffineLiftConv2d` (the kernel network takes 2 + 4 (GL) or 2 + 3 (SL) inputs).

    Shapes: ``x`` (B, C_in, N_in, H, W), ``h_out_inv`` (N_out, 2, 2), ``h_in`` (N_in, 2, 2) ->
    (B, C_out, N_out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        group: str = "sl2",
        kernel_size: int = 5,
        padding: int = 0,
        bias: bool = False,
        inr_hidden: int = 60,
        inr_layers: int = 3,
        w0: float = 10.0,
        masked: bool = True,
    ) -> None:
        super().__init__(
            in_channels,
            out_channels,
            group=group,
            kernel_size=kernel_size,
            padding=padding,
            bias=bias,
            inr_hidden=inr_hidden,
            inr_layers=inr_layers,
            w0=w0,
            masked=masked,
            in_coords=2 + lie.group_dim(group),
        )

    def kernel(self, h_out_inv: Tensor, h_in: Tensor) -> Tensor:
        """(C_out, N_out, C_in, N_in, k, k) kernel."""
        no, ni, k = h_out_inv.shape[0], h_in.shape[0], self.kernel_size
        pts = self._points(h_out_inv)  # (No, k, k, 2)
        chart = lie._chart(lie.relative_elements(h_out_inv, h_in), self.group)  # (No, Ni, d)
        w = self.kernel_net.forward_split(
            pts.view(no, 1, k, k, 2), chart.view(no, ni, 1, 1, -1)
        )  # (No, Ni, k, k, Cout*Cin)
        scale = _mask(pts, self.mask_kind).view(no, 1, k, k, 1)
        if not self.volume_preserving:
            scale = scale / torch.linalg.det(h_in).abs().view(1, ni, 1, 1, 1)
        w = (w * scale).view(no, ni, k, k, self.out_channels, self.in_channels)
        return w.permute(4, 0, 5, 1, 2, 3)

    def forward(self, x: Tensor, h_out_inv: Tensor, h_in: Tensor) -> Tensor:
        self._check_x(x, 5)
        _check_samples(h_out_inv, "h_out_inv")
        _check_samples(h_in, "h_in")
        if x.shape[2] != h_in.shape[0]:
            raise ValueError(f"x has {x.shape[2]} group samples but h_in has {h_in.shape[0]}")
        w = self.kernel(h_out_inv.to(x.dtype), h_in.to(x.dtype))
        co, no, ci, ni, k, _ = w.shape
        b = x.shape[0]
        y = F.conv2d(
            x.reshape(b, ci * ni, *x.shape[-2:]),
            w.reshape(co * no, ci * ni, k, k),
            padding=self.padding,
        )
        y = y.view(b, co, no, *y.shape[-2:])
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1, 1)
        return y


# ----------------------------------------------------------------------------- norm, pool, blocks


class GroupLayerNorm(nn.Module):
    """LayerNorm over (C, G, H, W) of (B, C, G, H, W), no affine: invariant to permuting G and
    to rotating H, W."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-4:])


class GroupMaxPool2d(nn.Module):
    """Spatial max pooling of (B, C, G, H, W) (each channel and sample separately)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.kernel_size = _check_int("kernel_size", kernel_size, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, c, g, h, w = x.shape
        y = F.max_pool2d(x.reshape(b, c * g, h, w), self.kernel_size)
        return y.view(b, c, g, *y.shape[-2:])

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"


class AffineResBlock(nn.Module):
    """Two group convolutions (same padding) sharing the input's sample set, each followed by
    LayerNorm(C, G, H, W) and GELU, plus a residual (a 1x1 group convolution when the channels
    change), then GELU. The output lives on the input's samples."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kw) -> None:
        super().__init__()
        k = conv_kw.pop("kernel_size", 5)
        self.conv1 = AffineGroupConv2d(
            in_channels, in_channels, kernel_size=k, padding=k // 2, **conv_kw
        )
        self.conv2 = AffineGroupConv2d(
            in_channels, out_channels, kernel_size=k, padding=k // 2, **conv_kw
        )
        self.norm = GroupLayerNorm()
        self.shortcut = None
        if in_channels != out_channels:
            kw = dict(conv_kw)
            kw["inr_hidden"] = max(1, kw.get("inr_hidden", 60) // 2)
            self.shortcut = AffineGroupConv2d(in_channels, out_channels, kernel_size=1, **kw)

    def forward(self, x: Tensor, h_inv: Tensor, h: Tensor) -> Tensor:
        s = x if self.shortcut is None else self.shortcut(x, h_inv, h)
        y = F.gelu(self.norm(self.conv1(x, h_inv, h)))
        y = F.gelu(self.norm(self.conv2(y, h_inv, h)))
        return F.gelu(y + s)


def _head(c: int, hidden: int, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(c, hidden, bias=False),
        nn.LayerNorm(hidden),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def _check_image(x: Tensor, in_channels: int, min_size: int) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point image batch, got dtype {x.dtype}")
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"x must be (B, {in_channels}, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"x must be square (H == W), got {tuple(x.shape[-2:])}")
    if x.shape[-1] < min_size:
        raise ValueError(f"x must be at least {min_size}x{min_size}, got {tuple(x.shape[-2:])}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
