"""Multi-domain digits (``DigitStyles``): sklearn's bundled 8x8 digits rendered in style domains.

PACS / DomainNet / Camelyon need downloads, so the BSS experiment uses the 1797 digits that ship
with scikit-learn (``sklearn.datasets.load_digits``, no network), upsampled to ``size`` pixels,
randomly scaled and shifted, and rendered in five style domains with known labels:

* ``A``: white digit on black;
* ``B``: random foreground / background colours;
* ``C``: digit filled with a random stripe texture on a sinusoidal grating background;
* ``D`` (held out): low contrast, blur and a colour cast;
* ``E`` (held out, harder): dark edge sketch (gradient magnitude) on a light background.

Digits are split by source index (train: even, test: odd) so no glyph is seen in both.
"""

from __future__ import annotations

import gzip
import importlib.util
import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import Tensor

from invariance.vision._checks import check_int

__all__ = ["DOMAINS", "make_digit_styles", "load_digit_glyphs"]

DOMAINS = ("A", "B", "C", "D", "E")


@lru_cache(maxsize=1)
def load_digit_glyphs() -> tuple[Tensor, Tensor]:
    """The 1797 sklearn digits as (1797, 8, 8) float in [0, 1] and (1797,) labels.

    Reads ``sklearn/datasets/data/digits.csv.gz`` (shipped with scikit-learn) directly, without
    importing scikit-learn (whose import costs seconds).
    """
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("DigitStyles needs scikit-learn installed (it ships the digits file)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        rows = [[float(v) for v in line.split(",")] for line in f if line.strip()]
    arr = torch.tensor(rows, dtype=torch.float32)
    return arr[:, :64].reshape(-1, 8, 8) / 16.0, arr[:, 64].long()


def _place(glyph: Tensor, size: int, g: torch.Generator) -> Tensor:
    """Random scale (0.6-0.85 of ``size``) and shift: (n, 8, 8) glyphs -> (n, size, size)."""
    n = glyph.shape[0]
    scale = 0.6 + 0.25 * torch.rand(n, generator=g)
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 2 * (1 - scale[:, None]) * 0.8
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = -shift / scale[:, None]
    grid = torch.nn.functional.affine_grid(theta, [n, 1, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(
        glyph[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0]


def _blur(x: Tensor, sigma: float) -> Tensor:
    """Gaussian blur of (n, C, H, W) with one sigma (reflect padding)."""
    r = max(1, int(math.ceil(2.5 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = torch.nn.functional.pad(x, (r, r, r, r), mode="reflect")
    x = torch.nn.functional.conv2d(x, k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return torch.nn.functional.conv2d(x, k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _colour(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, 3, 1, 1, generator=g)


def make_digit_styles(
    n: int | None = None, *, seed: int, domain: str, split: str = "train", size: int = 32
) -> dict[str, Tensor]:
    """Render digits in one style domain.

    Args:
        n: number of images (default: every digit of the split, ~900).
        seed: seed of the private generator.
        domain: one of ``"A".."E"`` (see module docstring).
        split: ``"train"`` (even source indices) or ``"test"`` (odd).
        size: image side (default: 32).

    Returns:
        dict with ``image`` (n, 3, size, size) in [0, 1], ``label`` (n,), ``domain`` (n,) index
        into :data:`DOMAINS` and ``mask`` (n, size, size), the ground-truth digit strokes.
    """
    if n is not None:
        check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=8)
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    glyphs, labels = load_digit_glyphs()
    idx = torch.arange(0 if split == "train" else 1, len(glyphs), 2)
    g = torch.Generator().manual_seed(int(seed) * 31 + DOMAINS.index(domain))
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        idx = idx[torch.randint(0, len(idx), (n,), generator=g)]
    m = _place(glyphs[idx], size, g).clamp(0, 1)[:, None]  # (n, 1, S, S)
    k = m.shape[0]
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    if domain == "A":
        img = m.expand(k, 3, size, size)
    elif domain == "B":
        fg, bg = _colour(k, g), _colour(k, g)
        same = (fg - bg).abs().sum(1, keepdim=True) < 0.6
        fg = torch.where(same, 1 - bg, fg)
        img = m * fg + (1 - m) * bg
    elif domain == "C":
        ang = math.pi * torch.rand(k, 1, 1, generator=g)
        freq = 0.3 + 0.6 * torch.rand(k, 1, 1, generator=g)
        grating = 0.5 + 0.5 * torch.sin(freq * (torch.cos(ang) * xx + torch.sin(ang) * yy))
        bg = grating[:, None] * _colour(k, g)
        ang2 = math.pi * torch.rand(k, 1, 1, generator=g)
        stripes = 0.5 + 0.5 * torch.sign(
            torch.sin(1.5 * (torch.cos(ang2) * xx + torch.sin(ang2) * yy))
        )
        fg = 0.4 + 0.6 * stripes[:, None] * _colour(k, g) + 0.2
        img = m * fg.clamp(0, 1) + (1 - m) * bg
    elif domain == "D":
        base = 0.35 + 0.3 * torch.rand(k, 1, 1, 1, generator=g)
        contrast = 0.15 + 0.15 * torch.rand(k, 1, 1, 1, generator=g)
        cast = 0.7 + 0.6 * torch.rand(k, 3, 1, 1, generator=g)
        img = (base + contrast * (2 * m - 1)) * cast
        img = _blur(img, 1.0)
    else:  # "E": edge sketch
        gy = torch.nn.functional.pad(m[..., 2:, :] - m[..., :-2, :], (0, 0, 1, 1))
        gx = torch.nn.functional.pad(m[..., :, 2:] - m[..., :, :-2], (1, 1, 0, 0))
        edge = (gx**2 + gy**2).sqrt().clamp(0, 1)
        img = (1 - edge).expand(k, 3, size, size) * (0.85 + 0.15 * _colour(k, g))
    img = img + 0.02 * torch.randn(img.shape, generator=g)
    return {
        "image": img.clamp(0, 1).contiguous(),
        "label": labels[idx].clone(),
        "domain": torch.full((k,), DOMAINS.index(domain), dtype=torch.long),
        "mask": m[:, 0],
    }
