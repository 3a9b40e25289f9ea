r"""Affine-equivariant group ResNet for images: lifting and group convolutions over R^2 x| H with
H = GL+(2, R) or SL(2, R), kernels from a SIREN on the global chart, Monte-Carlo group samples.

Paper: "Lie Group Decompositions for Equivariant Neural Networks", Mironenco & Forré, ICLR 2024,
arXiv 2310.11366. Official code: https://github.com/mirceamironenco/rgenn (MIT); read to match the
architecture and initialisation, nothing copied.

Mechanism. A lifting convolution turns an image into a function on (position, group sample):
for each sample :math:`h_k` the kernel is :math:`K_k(x) = k_\theta(h_k^{-1}x)\,|\det h_k^{-1}|`
(the determinant only for GL), with :math:`k_\theta` a SIREN evaluated on a fixed 5x5 grid in
:math:`[-1, 1]^2` and masked to the unit disc. A group convolution between an input sample set
:math:`\{h_i\}` and an output sample set :math:`\{h_o\}` uses
:math:`K_{o,i}(x) = k_\theta(h_o^{-1}x,\ \xi^{-1}(h_o^{-1}h_i)) / |\det h_i|` with
:math:`\xi^{-1}` the global chart of :mod:`invariance.geometry.lie`. Both run as one ``conv2d``
with ``(C_out N_out, C_in N_in)`` channels. Group samples are drawn afresh at every forward pass
(training and inference), so the network is equivariant in expectation; attached samples closed
under a finite subgroup (the C4 rotations) make it exactly invariant to that subgroup.
LayerNorm over (C, G, H, W), spatial max pooling and a global max over (G, H, W) give an invariant
feature vector for an MLP head.

Tested properties (``tests/test_affine_gresnet.py``): exact rot90/rot180 invariance with attached
C4 samples (< 1e-5, float32) with a negative control (a plain CNN, and the official buffer
aliasing re-created, which drifts); no two sample buffers share storage; Monte-Carlo rot90 drift
shrinks as the number of samples grows; under random affine warps the drift stays below a matched
plain CNN's; kernels equal the official layers' kernels on golden inputs; bad inputs (non-square
images, singular samples, ``gsamples < 1``) raise clear errors.

Deviations from the official code:

* The official ``register_gsamples`` registers the input-sample and inverse-sample buffers as two
  views of one tensor; on CPU ``attach_samples`` then overwrites one with the other, so the group
  convolution sees :math:`h_o^{-1}h_o^{-1}` instead of :math:`h_o^{-1}h_i` (rot90 invariance
  breaks; on GPU ``.to`` copies the buffers apart). Here samples are passed to the layers
  explicitly and attached samples are stored as separate clones.
* The official sampling wrapper hands the layer after a residual block the block's own freshly
  drawn (and otherwise unused) samples as input samples, although the block's output lives on the
  samples of the layer before it. Here the next layer gets the samples the features live on.
* For GL the official group convolution's smooth mask takes the norm of the whole kernel-network
  input (position and chart coordinates); here the mask depends on the position only, as in the
  lifting layer and for SL.
* No AMP, no ``torch.compile``; only the metric :math:`\alpha = 1`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import lie

__all__ = [
    "SIREN",
    "AffineLiftConv2d",
    "AffineGroupConv2d",
    "GroupLayerNorm",
    "GroupMaxPool2d",
    "AffineResBlock",
    "AffineGResNet",
    "PlainCNN",
    "kernel_grid",
]

Pair = tuple[Tensor, Tensor]


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


# ----------------------------------------------------------------------------- the network


class AffineGResNet(nn.Module):
    r"""Affine-equivariant (R^2 x| GL+(2) or SL(2)) residual network with an invariant output.

    Lift (``stem_kernel``, no padding) -> LN -> GELU; per further entry of ``dims`` a residual
    block -> LN -> 2x2 max pool -> GELU; a last group convolution (no padding) on fresh samples ->
    LN -> GELU; global max over (G, H, W); head Linear(``head_hidden``) -> LN -> GELU -> Dropout ->
    Linear(``num_classes``).

    Samples: two sample sets per forward, one for the lifting layer and the blocks, one for the
    last group convolution, each ``gsamples`` pairs from
    :func:`invariance.geometry.lie.sample_pairs`.
    They are drawn afresh at every forward unless samples are attached (:meth:`attach_samples`);
    ``sample_inference=False`` keeps the last samples in eval mode. ``last_samples`` holds the
    pairs of the latest forward.

    Args:
        in_channels: image channels (default: ``1``). num_classes: (default: ``10``).
        dims: channels of the lifting layer and blocks (default: ``(16, 16)``).
        group: ``"sl2"`` or ``"gl2"`` (default: ``"sl2"``).
        gsamples: samples per set, >= 1 (default: ``4``).
        spd_var, rotations: of the sampler (defaults: ``0.1``, ``"equidistant"``).
        stem_kernel, kernel_size: (defaults: ``5``, ``5``).
        inr_hidden, inr_layers, w0: SIREN (defaults: ``32``, ``3``, ``10.0``).
        head_hidden, dropout: head (defaults: ``256``, ``0.3``).
        sample_inference: fresh samples in eval mode too (default: ``True``).

    Shapes: (B, C, H, W) square images -> (B, num_classes) logits.

    Invariance: in expectation over the samples, invariant to affine maps of the image plane
    (SL or GL); exactly invariant to rot90 when the C4 rotations are attached.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        dims: Sequence[int] = (16, 16),
        group: str = "sl2",
        gsamples: int = 4,
        spd_var: float = 0.1,
        rotations: str = "equidistant",
        stem_kernel: int = 5,
        kernel_size: int = 5,
        inr_hidden: int = 32,
        inr_layers: int = 3,
        w0: float = 10.0,
        head_hidden: int = 256,
        dropout: float = 0.3,
        sample_inference: bool = True,
    ) -> None:
        super().__init__()
        self.group = lie._check_group(group)
        self.gsamples = _check_int("gsamples", gsamples, 1)
        self.in_channels = _check_int("in_channels", in_channels, 1)
        _check_int("num_classes", num_classes, 1)
        dims = list(dims)
        if not dims:
            raise ValueError("dims must name at least one channel count")
        for d in dims:
            _check_int("dims", d, 1)
        _check_int("inr_hidden", inr_hidden, 1)
        _check_int("inr_layers", inr_layers, 1)
        _check_pos_float("w0", w0)
        _check_int("head_hidden", head_hidden, 1)
        _check_int("stem_kernel", stem_kernel, 1)
        _check_int("kernel_size", kernel_size, 1)
        if isinstance(spd_var, bool) or not isinstance(spd_var, (int, float)):
            raise TypeError(f"spd_var must be a number, got {type(spd_var).__name__}")
        if not math.isfinite(spd_var) or spd_var < 0:
            raise ValueError(f"spd_var must be finite and >= 0, got {spd_var}")
        if rotations not in lie.ROTATION_SAMPLERS:
            raise ValueError(f"rotations must be one of {list(lie.ROTATION_SAMPLERS)}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a number, got {type(dropout).__name__}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.spd_var, self.rotations = float(spd_var), rotations
        self.sample_inference = bool(sample_inference)
        self.generator: torch.Generator | None = None
        kw = dict(group=group, inr_hidden=inr_hidden, inr_layers=inr_layers, w0=w0)
        self.lift = AffineLiftConv2d(in_channels, dims[0], kernel_size=stem_kernel, **kw)
        self.blocks = nn.ModuleList(
            AffineResBlock(a, b, kernel_size=kernel_size, **kw) for a, b in zip(dims[:-1], dims[1:])
        )
        self.last = AffineGroupConv2d(dims[-1], dims[-1], kernel_size=kernel_size, **kw)
        self.norm = GroupLayerNorm()
        self.pool = GroupMaxPool2d(2)
        self.head = _head(dims[-1], head_hidden, num_classes, dropout)
        size = stem_kernel - 1
        for _ in self.blocks:
            size = 2 * size + 1
        self.min_size = size + kernel_size
        self._attached = False
        self.last_samples: list[Pair] = []
        for k in range(2):
            self.register_buffer(f"_g{k}", torch.zeros(0, 2, 2), persistent=False)
            self.register_buffer(f"_ginv{k}", torch.zeros(0, 2, 2), persistent=False)

    n_sample_sets = 2

    # -- samples ------------------------------------------------------------------------------
    def sample(self, generator: torch.Generator | None = None) -> list[Pair]:
        """Two fresh sample sets ``[(g, g_inv), (g, g_inv)]`` (not attached)."""
        p = next(self.parameters())
        gen = generator if generator is not None else self.generator
        return [
            lie.sample_pairs(
                self.gsamples,
                self.group,
                spd_var=self.spd_var,
                rotations=self.rotations,
                generator=gen,
                dtype=p.dtype,
                device=p.device,
            )
            for _ in range(self.n_sample_sets)
        ]

    def attach_samples(self, g: Tensor | Sequence[Pair], g_inv: Tensor | None = None) -> None:
        """Fix the samples for every later forward: one pair ``(g, g_inv)`` for both sets, or a
        list of ``n_sample_sets`` pairs. Each is validated (GL+/SL membership, ``g g_inv = I``)
        and stored as its own clone. :meth:`detach_samples` returns to fresh sampling."""
        pairs = [(g, g_inv)] * self.n_sample_sets if isinstance(g, Tensor) else list(g)
        if len(pairs) != self.n_sample_sets:
            raise ValueError(f"g must be one pair or {self.n_sample_sets} pairs, got {len(pairs)}")
        p = next(self.parameters())
        for k, (a, b) in enumerate(pairs):
            lie._check_matrices(a, "g")
            lie._check_matrices(b, "g_inv")
            if a.shape != b.shape or a.dim() != 3:
                raise ValueError(
                    f"g and g_inv must both be (N, 2, 2), got {tuple(a.shape)} and {tuple(b.shape)}"
                )
            eye = torch.eye(2, dtype=a.dtype, device=a.device)
            if (a @ b - eye).abs().max() > 1e-4:
                raise ValueError("g_inv must be the inverse of g (g @ g_inv != I)")
            if self.group == "sl2" and (torch.linalg.det(a) - 1).abs().max() > 1e-4:
                raise ValueError("g must have unit determinant for group='sl2'")
            setattr(self, f"_g{k}", a.detach().to(p).clone())
            setattr(self, f"_ginv{k}", b.detach().to(p).clone())
        self._attached = True

    def detach_samples(self) -> None:
        """Back to fresh samples at every forward."""
        self._attached = False

    @property
    def samples_attached(self) -> bool:
        return self._attached

    def _pairs(self) -> list[Pair]:
        if self._attached:
            return [(getattr(self, f"_g{k}"), getattr(self, f"_ginv{k}")) for k in range(2)]
        if self.training or self.sample_inference or not self.last_samples:
            return self.sample()
        return self.last_samples

    # -- forward ------------------------------------------------------------------------------
    def forward_features(self, x: Tensor, pairs: Sequence[Pair] | None = None) -> Tensor:
        """(B, C, H, W) -> (B, C', G, H', W') equivariant features (before the global max)."""
        _check_image(x, self.in_channels, self.min_size)
        pairs = list(pairs) if pairs is not None else self._pairs()
        self.last_samples = pairs
        (g0, g0_inv), (g1, g1_inv) = pairs
        y = F.gelu(self.norm(self.lift(x, g0_inv)))
        for block in self.blocks:
            y = F.gelu(self.pool(self.norm(block(y, g0_inv, g0))))
        return F.gelu(self.norm(self.last(y, g1_inv, g0)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.forward_features(x)
        return self.head(y.amax(dim=(-3, -2, -1)))

    def extra_repr(self) -> str:
        return (
            f"group={self.group}, gsamples={self.gsamples}, spd_var={self.spd_var}, "
            f"rotations={self.rotations!r}"
        )


class PlainCNN(nn.Module):
    """The same macro-architecture with ordinary convolutions (no group axis): a baseline whose
    width can be chosen to match :class:`AffineGResNet`'s parameter count
    (:meth:`matched_width`). Invariant only to translations (global max)."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        width: int = 32,
        n_blocks: int = 1,
        kernel_size: int = 5,
        head_hidden: int = 256,
        dropout: float = 0.3,
    ) -> None:
        super().__init__()
        self.in_channels = _check_int("in_channels", in_channels, 1)
        w, k = _check_int("width", width, 1), _check_int("kernel_size", kernel_size, 1)
        _check_int("n_blocks", n_blocks, 0)
        self.stem = nn.Conv2d(in_channels, w, k, bias=False)
        self.blocks = nn.ModuleList(
            nn.ModuleList([nn.Conv2d(w, w, k, padding=k // 2, bias=False) for _ in range(2)])
            for _ in range(n_blocks)
        )
        self.last = nn.Conv2d(w, w, k, bias=False)
        self.head = _head(w, head_hidden, num_classes, dropout)
        size = k - 1
        for _ in range(n_blocks):
            size = 2 * size + 1
        self.min_size = size + k

    @staticmethod
    def _ln(x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[-3:])

    def forward(self, x: Tensor) -> Tensor:
        _check_image(x, self.in_channels, self.min_size)
        y = F.gelu(self._ln(self.stem(x)))
        for c1, c2 in self.blocks:
            z = F.gelu(self._ln(c1(y)))
            z = F.gelu(self._ln(c2(z)))
            y = F.gelu(F.max_pool2d(self._ln(F.gelu(z + y)), 2))
        y = F.gelu(self._ln(self.last(y)))
        return self.head(y.amax(dim=(-2, -1)))

    @staticmethod
    def n_params(
        width: int,
        *,
        in_channels: int = 1,
        num_classes: int = 10,
        n_blocks: int = 1,
        kernel_size: int = 5,
        head_hidden: int = 256,
    ) -> int:
        """Parameter count of a :class:`PlainCNN` (closed form)."""
        k2 = kernel_size**2
        convs = in_channels * width * k2 + (2 * n_blocks + 1) * width * width * k2
        head = width * head_hidden + 2 * head_hidden + head_hidden * num_classes + num_classes
        return convs + head

    @staticmethod
    def matched_width(n_params: int, **kw) -> int:
        """The width whose parameter count is closest to ``n_params`` (``kw``: as
        :meth:`n_params`)."""
        return min(range(1, 513), key=lambda w: abs(PlainCNN.n_params(w, **kw) - n_params))
