"""Multi-task digits (``DigitsMTL``) for controllable multi-task networks.

NYUD-v2 / PASCAL-Context need downloads, so the CIKD experiment renders one of scikit-learn's
bundled 8x8 digits at a random position and scale on a random sinusoidal texture, with three
exact targets per image:

* ``label``: the digit class (10-way classification);
* ``mask``: the digit's foreground (dense binary segmentation, stroke intensity > 0.3);
* ``depth``: a dense "depth" map, the distance of every pixel to the digit's centre divided by
  the image side, with the digit itself 0.1 nearer (dense regression, like NYUD depth).

Digits are split by source index (train: even, test: odd) so no glyph is in both splits.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int
from invariance.vision.data.digit_styles import _place, load_digit_glyphs

__all__ = ["make_digits_mtl"]


def make_digits_mtl(
    n: int, *, seed: int, split: str = "train", size: int = 32
) -> dict[str, Tensor]:
    """Render ``n`` multi-task digit images.

    Args:
        n: number of images (>= 1).
        seed: seed of the private generator.
        split: ``"train"`` (even glyph indices) or ``"test"`` (odd).
        size: image side, >= 8 (default: 32).

    Returns:
        dict with ``image`` (n, 3, S, S) in [0, 1], ``label`` (n,), ``mask`` (n, 1, S, S) in
        {0, 1} and ``depth`` (n, 1, S, S).
    """
    check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=8)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    glyphs, labels = load_digit_glyphs()
    pool = torch.arange(0 if split == "train" else 1, len(glyphs), 2)
    g = torch.Generator().manual_seed(int(seed) * 13 + (0 if split == "train" else 1))
    idx = pool[torch.randint(0, len(pool), (n,), generator=g)]
    m = _place(glyphs[idx], size, g).clamp(0, 1)[:, None]  # (n, 1, S, S)
    ar = torch.arange(size, dtype=torch.float32)
    yy, xx = torch.meshgrid(ar, ar, indexing="ij")
    ang = math.pi * torch.rand(n, 1, 1, generator=g)
    freq = (0.5 + 1.0 * torch.rand(n, 1, 1, generator=g)) * (16.0 / size)
    tex = 0.5 + 0.5 * torch.sin(freq * (torch.cos(ang) * xx + torch.sin(ang) * yy))
    bg = tex[:, None] * torch.rand(n, 3, 1, 1, generator=g) * 0.6
    fg = 0.6 + 0.4 * torch.rand(n, 3, 1, 1, generator=g)
    img = m * fg + (1 - m) * bg + 0.03 * torch.randn(n, 3, size, size, generator=g)
    mask = (m > 0.3).float()
    w = m[:, 0] + 1e-6
    cy = (w * yy).sum((1, 2)) / w.sum((1, 2))
    cx = (w * xx).sum((1, 2)) / w.sum((1, 2))
    dist = ((yy - cy[:, None, None]) ** 2 + (xx - cx[:, None, None]) ** 2).sqrt() / size
    depth = dist[:, None] - 0.1 * mask
    return {
        "image": img.clamp(0, 1).contiguous(),
        "label": labels[idx].clone(),
        "mask": mask,
        "depth": depth,
    }
