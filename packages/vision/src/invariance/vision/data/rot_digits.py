"""Rotated coloured digits (``RotDigits``): objects seen in several views with exact latents, the
CPU analogue of 3DIEBench for SIE.

Every scikit-learn 8x8 digit (read by
:func:`~invariance.vision.data.digit_styles.load_digit_glyphs`, no network) is one *object*. Each of
its ``views`` views rotates the glyph by an angle ``theta ~ U[0, 2 pi)`` (``affine_grid`` /
``grid_sample``, glyph scaled to 0.8 of the image so no corner is cut) and paints it in a random
RGB colour on black: the rotation is the latent an equivariant representation should keep, the
colour a nuisance. Objects are split by source index (train: even, test: odd).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int
from invariance.vision.data.digit_styles import load_digit_glyphs

__all__ = ["make_rot_digits", "rotate_glyphs"]


def rotate_glyphs(glyphs: Tensor, theta: Tensor, size: int, scale: float = 0.8) -> Tensor:
    """(n, 8, 8) glyphs in [0, 1] rotated counter-clockwise by ``theta`` (n,) radians and drawn at
    ``scale`` of a ``size`` x ``size`` image: (n, size, size)."""
    n = glyphs.shape[0]
    c, s = torch.cos(theta), torch.sin(theta)
    a = torch.zeros(n, 2, 3)
    # output -> input sampling grid: inverse rotation, then zoom out by 1 / scale
    a[:, 0, 0], a[:, 0, 1] = c / scale, s / scale
    a[:, 1, 0], a[:, 1, 1] = -s / scale, c / scale
    grid = torch.nn.functional.affine_grid(a, [n, 1, size, size], align_corners=False)
    out = torch.nn.functional.grid_sample(
        glyphs[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[:, 0].clamp(0, 1)


def make_rot_digits(
    n: int | None = None, *, seed: int = 0, views: int = 8, size: int = 16, split: str = "train"
) -> dict[str, Tensor]:
    """Render ``views`` rotated, recoloured views of each digit object.

    Args:
        n: number of objects (default: every digit of the split, ~900).
        seed: seed of the private generator (default: ``0``).
        views: views per object, >= 2 (default: ``8``).
        size: image side, >= 8 (default: ``16``).
        split: ``"train"`` (even source indices) or ``"test"`` (odd).

    Returns:
        dict with ``image`` (n, views, 3, size, size) in [0, 1], ``theta`` (n, views) rotation
        angles in [0, 2 pi), ``colour`` (n, views, 3) and ``label`` (n,) the digit.
    """
    if n is not None:
        check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(views, "views", lo=2)
    check_int(size, "size", lo=8)
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    glyphs, labels = load_digit_glyphs()
    idx = torch.arange(0 if split == "train" else 1, len(glyphs), 2)
    g = torch.Generator().manual_seed(int(seed) * 104729 + 3)
    if n is not None:
        idx = (
            idx[torch.randperm(len(idx), generator=g)[:n]]
            if n <= len(idx)
            else idx[torch.randint(0, len(idx), (n,), generator=g)]
        )
    k = len(idx)
    theta = torch.rand(k, views, generator=g) * 2 * math.pi
    colour = 0.25 + 0.75 * torch.rand(k, views, 3, generator=g)
    rep = glyphs[idx].repeat_interleave(views, 0)
    m = rotate_glyphs(rep, theta.reshape(-1), size).reshape(k, views, 1, size, size)
    return {
        "image": (m * colour[..., None, None]).contiguous(),
        "theta": theta,
        "colour": colour,
        "label": labels[idx].clone(),
    }
