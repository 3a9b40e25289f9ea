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
from .nn.affine_layers import (
    SIREN,
    AffineGroupConv2d,
    AffineLiftConv2d,
    AffineResBlock,
    GroupLayerNorm,
    GroupMaxPool2d,
    _check_image,
    _check_int,
    _check_pos_float,
    _head,
    kernel_grid,
)

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
