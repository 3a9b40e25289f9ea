"""Batch Styles Standardization (BSS) for domain-invariant self-supervised learning.

Paper: M. Scalbert, M. Vakalopoulou, F. Couzinie-Devy, "Towards domain-invariant Self-Supervised
Learning with Batch Styles Standardization", ICLR 2024, arXiv:2303.06088. No official repository
was found; the transform (:mod:`invariance.vision.nn.bss`) and this SimCLR pipeline are an
independent implementation from the paper's description.

Mechanism. Inside every view-batch of an SSL method, BSS replaces the low-frequency Fourier
amplitudes of all images by those of one randomly chosen image of the batch (one area ratio per
batch), keeping each image's phase. All images of a view-batch then share one style, so
contrastive negatives cannot be separated by style, while the two views of an image carry two
different styles, so positives teach style invariance, without domain labels. The per-image
colour jitter of SimCLR is replaced by batch-wise colour jitter (same parameters for the whole
view-batch). The combination with SimCLR (NT-Xent, temperature 0.2) is what the paper calls
CLaSSy.

Tested properties (packages/vision/tests/test_bss.py):
    * ``test_bss_reference_unchanged_and_phase_kept``: reference image returned exactly, phases
      of every image kept, low-frequency amplitudes equal the reference's.
    * ``test_bss_dc_bin_even_sizes``: the DC bin is always standardised on even sizes (the
      albumentations/FDA window misses it).
    * ``test_bss_style_invariance``: with r = 1 the output is invariant to the style (amplitude
      rescaling / zero-phase blur) of the non-reference images (core ``assert_invariant``);
      negative controls: r = 0.05 and per-image Fourier augmentation are not.
    * ``test_bss_idempotent``: applying BSS twice with the same reference and r is a no-op.
    * ``test_bss_batch_permutation_equivariant``: permuting the batch (same reference image)
      permutes the output.
    * ``test_bss_fda_parity``: window="fda" matches albumentations' FDA (golden values).
    * ``test_bss_removes_style_shortcut``: an MLP on colour statistics alone learns to find
      SSL positives with SimCLR views but stays at chance with batch-wise jitter + BSS.
    * ``test_bss_learns_unseen_domain`` (slow, xfail): SimCLR+BSS beats SimCLR on the unseen
      domain; not reproduced at CPU budgets (README).

Deviations. Data are the procedural ``DigitStyles`` domains (PACS/DomainNet need downloads);
the encoder is a 4-layer CNN and pre-training is a few hundred steps on CPU. The paper's exact
r range is not confirmed; the transform and the tiny config default to r ~ U(0.01, 0.3)
(configurable); the ``full`` preset (``reproduce``) uses r ~ U(0, 0.02), the best range of the
r ranges tried on 32-px images (README). The SimCLR augmentations are kornia's
(``RandomResizedCrop``, ``ColorJitter`` with brightness/contrast/saturation 0.4 and hue 0.1 applied
with p = 0.8, ``RandomGrayscale`` p = 0.2); kornia draws from torch's global generator, so
:class:`SSLAugment` seeds it from the caller's generator inside ``torch.random.fork_rng``.
``batch_styles_standardization`` raises on images outside [0, 1] when ``clip=True`` (instead of
clipping an out-of-range input silently), on ``lam`` outside [0, 1] and on empty batches.
"""

from __future__ import annotations

import importlib

import kornia.augmentation as K
import torch
from torch import Tensor, nn

from invariance.vision._checks import check_number, check_tensor
from invariance.vision.nn.bss import BSS, batch_styles_standardization

__all__ = ["BSS", "batch_styles_standardization", "SSLAugment", "SimCLR", "nt_xent_loss"]


def nt_xent_loss(z1: Tensor, z2: Tensor, *, temperature: float = 0.2) -> dict[str, Tensor]:
    """SimCLR NT-Xent loss for (N, D) projections of two views; returns ``loss`` and ``acc``
    (how often the positive is the most similar of the 2N - 1 candidates)."""
    check_tensor(z1, "z1", dims=2, expected="(N, D)")
    check_tensor(z2, "z2", dims=2, expected="(N, D)")
    check_number(temperature, "temperature", lo=0.0, lo_open=True)
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"z1 and z2 must both be (N, D), got {tuple(z1.shape)}, {tuple(z2.shape)}")
    n = z1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    loss = torch.nn.functional.cross_entropy(sim, target)
    acc = (sim.argmax(1) == target).float().mean()
    return {"loss": loss, "acc": acc.detach()}


class SSLAugment(nn.Module):
    """SimCLR augmentations (kornia), with batch-wise colour jitter and BSS as options.

    Per image: random resized crop (scale ``crop_scale``) and random grayscale (p = 0.2).
    Colour jitter (brightness, contrast, saturation ``jitter``, hue ``hue``; applied with
    p = 0.8): drawn per image (SimCLR) or once per view-batch (``batchwise=True``, kornia's
    ``same_on_batch``). Then ``bss`` (a :class:`BSS`, or None) on the whole view-batch.

    Args:
        batchwise (bool): one colour-jitter draw per batch (default: False).
        bss (BSS | None): batch transform applied last (default: None).
        crop_scale (tuple): area range of the resized crop (default: (0.5, 1.0)).
        jitter (float): brightness/contrast/saturation strength (default: 0.4).
        hue (float): hue strength, at most 0.5 (default: 0.1).

    Shapes: (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1].
    """

    def __init__(
        self,
        *,
        batchwise: bool = False,
        bss: BSS | None = None,
        crop_scale: tuple[float, float] = (0.5, 1.0),
        jitter: float = 0.4,
        hue: float = 0.1,
    ) -> None:
        super().__init__()
        if not (
            isinstance(crop_scale, (tuple, list))
            and len(crop_scale) == 2
            and 0 < crop_scale[0] <= crop_scale[1] <= 1
        ):
            raise ValueError(
                f"crop_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {crop_scale!r}"
            )
        check_number(jitter, "jitter", lo=0.0, hi=1.0)
        check_number(hue, "hue", lo=0.0, hi=0.5)
        self.batchwise, self.bss = batchwise, bss
        self.crop_scale, self.jitter, self.hue = tuple(crop_scale), jitter, hue
        self._ops_by_size: dict[tuple[int, int], K.AugmentationSequential] = {}

    def _ops(self, size: tuple[int, int]) -> K.AugmentationSequential:
        if size not in self._ops_by_size:
            self._ops_by_size[size] = self._build_ops(size)
        return self._ops_by_size[size]

    def _build_ops(self, size: tuple[int, int]) -> K.AugmentationSequential:
        return K.AugmentationSequential(
            K.RandomResizedCrop(size, scale=self.crop_scale),
            K.ColorJitter(
                self.jitter, self.jitter, self.jitter, self.hue, p=0.8, same_on_batch=self.batchwise
            ),
            K.RandomGrayscale(p=0.2),
        )

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3 or x.shape[0] == 0:
            raise ValueError(
                f"SSLAugment expects x of shape (N, 3, H, W) with N >= 1, got "
                f"{tuple(getattr(x, 'shape', ()))}"
            )
        if not x.is_floating_point():
            raise TypeError(f"x must be a floating tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
            raise ValueError("x must hold finite images in [0, 1]")
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            x = self._ops(tuple(x.shape[-2:]))(x)
        if self.bss is not None:
            x = self.bss(x.clamp(0.0, 1.0), generator=generator)
        return x

    def extra_repr(self) -> str:
        return (
            f"batchwise={self.batchwise}, crop_scale={self.crop_scale}, "
            f"jitter={self.jitter}, hue={self.hue}"
        )


class SimCLR(nn.Module):
    """SimCLR with a small CNN encoder (4 conv blocks, BN, ReLU, global average pool) and a
    2-layer projector.

    Args:
        width (int): channels of the first block, doubled twice (default: 32).
        feat_dim (int): encoder output (default: 128). proj_dim (int): projection (default: 64).

    Shapes: ``encode``: (N, 3, H, W) -> (N, feat_dim); ``forward``: -> (N, proj_dim).
    """

    def __init__(self, *, width: int = 32, feat_dim: int = 128, proj_dim: int = 64) -> None:
        super().__init__()
        w = width
        chans = [3, w, 2 * w, 4 * w, feat_dim]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [
                nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, stride=1 if i == 0 else 2),
                nn.BatchNorm2d(chans[i + 1]),
                nn.ReLU(),
            ]
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.projector = nn.Sequential(
            nn.Linear(feat_dim, feat_dim), nn.ReLU(), nn.Linear(feat_dim, proj_dim)
        )
        self.width, self.feat_dim, self.proj_dim = width, feat_dim, proj_dim

    def reset_parameters(self) -> None:
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

    def encode(self, x: Tensor) -> Tensor:
        check_tensor(x, "x", dims=4, expected="(N, 3, H, W)")
        if x.shape[1] != 3:
            raise ValueError(f"SimCLR expects x of shape (N, 3, H, W), got {tuple(x.shape)}")
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.projector(self.encode(x))

    def extra_repr(self) -> str:
        return f"width={self.width}, feat_dim={self.feat_dim}, proj_dim={self.proj_dim}"


_MOVED = ("BSSConfig", "BSSRecipe", "linear_probe")


def __getattr__(name: str) -> object:
    """Recipe names that moved to :mod:`invariance.vision.recipes.bss` stay importable here."""
    if name in _MOVED:
        return getattr(importlib.import_module("invariance.vision.recipes.bss"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
