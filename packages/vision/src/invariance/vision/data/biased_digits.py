"""Biased coloured digits (``BiasedColorDigits``): a procedural analogue of the biased image sets
(Waterbirds, CelebA, FairFace) that InvDiff de-biases, with the bias attribute known exactly.

Each image is one of scikit-learn's bundled 8x8 digits (read by
:func:`~invariance.vision.data.digit_styles.load_digit_glyphs`, no network) drawn in a foreground
colour on black, resized to ``size`` pixels, in ``[-1, 1]`` (the range diffusion models use).
The *class* (the "prompt" of a conditional generator) is the digit; the *bias attribute* is the
colour. Class ``k`` takes its majority colour ``k mod len(colours)`` with probability ``p_bias``
and one of the other colours otherwise, so with ``p_bias = 0.9`` and two colours about 10 % of
every class is a *minority* (colour against the class's majority), and a generator that copies the
data is biased (bias score ``|2 p_bias - 1| = 0.8`` per class for two colours).

Digits are split by source index (train: even, test: odd), so no glyph is in both splits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.vision._checks import check_int, check_number
from invariance.vision.data.digit_styles import load_digit_glyphs

__all__ = ["COLOURS", "make_biased_digits"]

#: foreground colours (RGB in [0, 1]) by name
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.1, 0.1),
    "green": (0.1, 1.0, 0.1),
    "blue": (0.15, 0.3, 1.0),
}


def make_biased_digits(
    n: int | None = None,
    *,
    seed: int = 0,
    classes: tuple[int, ...] = (0, 1),
    colours: tuple[str, ...] = ("red", "green"),
    p_bias: float = 0.9,
    size: int = 8,
    split: str = "train",
    background: float = 0.0,
) -> dict[str, Tensor]:
    """Render biased coloured digits.

    Args:
        n: number of images (default: every digit of ``classes`` in the split, one image each);
            with ``n`` the glyphs are drawn with replacement, each with a fresh colour.
        seed: seed of the private generator (default: ``0``).
        classes: the digit classes used, relabelled ``0..len(classes)-1`` (default: ``(0, 1)``).
        colours: names from :data:`COLOURS`; class ``k``'s majority colour is
            ``colours[k % len(colours)]`` (default: ``("red", "green")``).
        p_bias: probability of the majority colour, in ``[0, 1]`` (default: ``0.9``);
            ``1 / len(colours)`` gives unbiased data.
        size: image side, >= 4 (default: ``8``; bilinear resize of the 8x8 glyphs).
        split: ``"train"`` (even source indices), ``"test"`` (odd) or ``"all"``.
        background: brightness of the background in the image's colour, as a fraction of the
            foreground in ``[0, 1]`` (default: ``0``, black); above 0 the colour covers every
            pixel, a stronger colour signal for a small generator.

    Returns:
        dict with ``image`` (n, 3, size, size) in [-1, 1], ``label`` (n,) class index,
        ``attr`` (n,) colour index into ``colours``, ``minority`` (n,) bool (colour is not the
        class's majority colour), ``index`` (n,) position in the set (for per-sample group
        weights).
    """
    if n is not None:
        check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=4)
    check_number(p_bias, "p_bias", lo=0.0, hi=1.0)
    check_number(background, "background", lo=0.0, hi=1.0)
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not isinstance(classes, (tuple, list)) or not classes:
        raise ValueError(f"classes must be a non-empty tuple of digits 0-9, got {classes!r}")
    if any(isinstance(c, bool) or not isinstance(c, int) or not 0 <= c <= 9 for c in classes):
        raise ValueError(f"classes must hold digits 0-9, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes must not repeat, got {classes!r}")
    if not isinstance(colours, (tuple, list)) or len(colours) < 2:
        raise ValueError(f"colours must name at least two colours, got {colours!r}")
    if any(c not in COLOURS for c in colours) or len(set(colours)) != len(colours):
        raise ValueError(f"colours must be distinct names from {sorted(COLOURS)}, got {colours!r}")
    glyphs, digit = load_digit_glyphs()
    keep = torch.zeros(len(digit), dtype=torch.bool)
    for c in classes:
        keep |= digit == c
    if split != "all":
        keep &= (torch.arange(len(digit)) % 2) == (0 if split == "train" else 1)
    idx = keep.nonzero()[:, 0]
    g = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    if n is not None:
        idx = idx[torch.randint(0, len(idx), (n,), generator=g)]
    k = len(idx)
    remap = {c: i for i, c in enumerate(classes)}
    label = torch.tensor([remap[int(d)] for d in digit[idx]], dtype=torch.long)
    n_col = len(colours)
    major = label % n_col
    flip = torch.rand(k, generator=g) >= p_bias
    # a minority draws one of the other colours uniformly
    other = (major + 1 + torch.randint(0, n_col - 1, (k,), generator=g)) % n_col
    attr = torch.where(flip, other, major)
    rgb = torch.tensor([COLOURS[c] for c in colours])[attr]  # (k, 3)
    shade = 0.75 + 0.25 * torch.rand(k, 1, generator=g)
    m = glyphs[idx][:, None]  # (k, 1, 8, 8) in [0, 1]
    if size != 8:
        m = torch.nn.functional.interpolate(m, size=(size, size), mode="bilinear")
    m = m.clamp(0, 1)
    if background > 0:
        m = m + background * (1 - m)
    img = m * (rgb * shade)[:, :, None, None]
    return {
        "image": (img * 2 - 1).contiguous(),
        "label": label,
        "attr": attr,
        "minority": attr != major,
        "index": torch.arange(k),
    }
