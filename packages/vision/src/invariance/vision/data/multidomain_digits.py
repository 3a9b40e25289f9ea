"""Multi-domain digits for in-context demonstration selection (``MultiDomainDigits``).

The medical domain-generalisation benchmarks of the ICL paper (Camelyon17, HAM10000) need
downloads, so the InvariantSelectPR experiment renders the 1797 digits that ship with
scikit-learn (read directly, see :func:`~invariance.vision.data.digit_styles.load_digit_glyphs`)
in three labelled **source** domains, which form the demonstration pool, and three unseen
**target** domains, which provide the queries:

* ``D0``: white digit on black;
* ``D1``: random foreground and background colours (kept apart);
* ``D2``: white digit over a random sinusoidal stripe texture, plus pixel noise;
* ``mild`` (target): inverted digit (dark on light) with a sepia tint;
* ``medium`` (target): coloured digit on stripes that mix two random colours;
* ``hard`` (target): inverted, blurred (sigma 1.5 px at 64 px), sepia, 5 % salt-and-pepper.

Glyphs are split once by a fixed permutation (seed 0) into a pool part (the first ``n_pool``
glyph indices) and a query part (the rest), so no query glyph is ever a demonstration.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int
from invariance.vision.data.digit_styles import _blur, _place, load_digit_glyphs

__all__ = [
    "SOURCE_DOMAINS",
    "TARGET_DOMAINS",
    "MULTIDOMAIN_DOMAINS",
    "make_multidomain_digits",
    "glyph_split",
]

SOURCE_DOMAINS = ("D0", "D1", "D2")
TARGET_DOMAINS = ("mild", "medium", "hard")
MULTIDOMAIN_DOMAINS = SOURCE_DOMAINS + TARGET_DOMAINS

_SEPIA = torch.tensor([[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]])


def glyph_split(n_pool: int = 1100) -> tuple[Tensor, Tensor]:
    """Glyph indices of the pool (first ``n_pool`` of a fixed permutation) and of the queries."""
    check_int(n_pool, "n_pool")
    glyphs, _ = load_digit_glyphs()
    if n_pool >= len(glyphs):
        raise ValueError(f"n_pool must be < {len(glyphs)} (queries need glyphs), got {n_pool}")
    perm = torch.randperm(len(glyphs), generator=torch.Generator().manual_seed(0))
    return perm[:n_pool].sort().values, perm[n_pool:].sort().values


def _grid(size: int) -> tuple[Tensor, Tensor]:
    ar = torch.arange(size, dtype=torch.float32) * (32.0 / size)  # frequencies in 32 px units
    return torch.meshgrid(ar, ar, indexing="ij")


def _stripes(k: int, size: int, g: torch.Generator) -> Tensor:
    """(k, 1, S, S) sinusoidal gratings in [0, 1] with random angle, frequency and phase."""
    yy, xx = _grid(size)
    ang = math.pi * torch.rand(k, 1, 1, generator=g)
    freq = 0.4 + 0.8 * torch.rand(k, 1, 1, generator=g)
    ph = 2 * math.pi * torch.rand(k, 1, 1, generator=g)
    return (0.5 + 0.5 * torch.sin(freq * (torch.cos(ang) * xx + torch.sin(ang) * yy) + ph))[:, None]


def _sepia(img: Tensor, g: torch.Generator) -> Tensor:
    out = torch.einsum("ij,njhw->nihw", _SEPIA, img)
    tint = 0.85 + 0.15 * torch.rand(img.shape[0], 1, 1, 1, generator=g)
    return out * tint


def make_multidomain_digits(
    domain: str,
    *,
    seed: int,
    part: str = "pool",
    n: int | None = None,
    size: int = 64,
    n_pool: int = 1100,
) -> dict[str, Tensor]:
    """Render the glyphs of one part (``pool`` or ``query``) in one domain.

    Args:
        domain: one of :data:`MULTIDOMAIN_DOMAINS` (``D0``, ``D1``, ``D2``, ``mild``,
            ``medium``, ``hard``).
        seed: seed of the private generator (placement, colours, textures, noise).
        part: ``"pool"`` (the first ``n_pool`` glyphs of the fixed split) or ``"query"``.
        n: keep only the first ``n`` glyphs of the part (default: all of them).
        size: image side in pixels, >= 16 (default: 64).
        n_pool: glyphs in the pool part (default: 1100; the query part gets the other 697).

    Returns:
        dict with ``image`` (n, 3, size, size) in [0, 1], ``label`` (n,), ``domain`` (n,) index
        into :data:`MULTIDOMAIN_DOMAINS` and ``glyph`` (n,) index into the 1797 digits.
    """
    if not isinstance(domain, str) or domain not in MULTIDOMAIN_DOMAINS:
        raise ValueError(f"domain must be one of {MULTIDOMAIN_DOMAINS}, got {domain!r}")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=16)
    if part not in ("pool", "query"):
        raise ValueError(f"part must be 'pool' or 'query', got {part!r}")
    if n is not None:
        check_int(n, "n")
    pool, query = glyph_split(n_pool)
    idx = pool if part == "pool" else query
    if n is not None:
        idx = idx[:n]
    glyphs, labels = load_digit_glyphs()
    d = MULTIDOMAIN_DOMAINS.index(domain)
    g = torch.Generator().manual_seed(int(seed) * 101 + 7 * d + (0 if part == "pool" else 50))
    m = _place(glyphs[idx], size, g).clamp(0, 1)[:, None]  # (k, 1, S, S)
    k = m.shape[0]
    sigma = 1.5 * size / 64
    if domain == "D0":
        img = m.expand(k, 3, size, size)
    elif domain == "D1":
        fg, bg = torch.rand(k, 3, 1, 1, generator=g), torch.rand(k, 3, 1, 1, generator=g)
        close = (fg - bg).abs().sum(1, keepdim=True) < 0.6
        fg = torch.where(close, 1 - bg, fg)
        img = m * fg + (1 - m) * bg
    elif domain == "D2":
        tex = 0.7 * _stripes(k, size, g)
        img = (m + (1 - m) * tex).expand(k, 3, size, size)
        img = img + 0.08 * torch.randn(img.shape, generator=g)
    elif domain == "mild":
        img = _sepia((1 - m).expand(k, 3, size, size), g)
    elif domain == "medium":
        c1, c2 = torch.rand(k, 3, 1, 1, generator=g), torch.rand(k, 3, 1, 1, generator=g)
        s = _stripes(k, size, g)
        bg = s * c1 + (1 - s) * c2
        fg = torch.rand(k, 3, 1, 1, generator=g)
        img = m * fg + (1 - m) * bg
    else:  # hard
        img = _sepia(_blur((1 - m).expand(k, 3, size, size).contiguous(), sigma), g)
        u = torch.rand(k, 1, size, size, generator=g)
        img = torch.where(u < 0.025, torch.zeros(()), torch.where(u < 0.05, torch.ones(()), img))
    img = img + 0.02 * torch.randn(img.shape, generator=g)
    return {
        "image": img.clamp(0, 1).contiguous(),
        "label": labels[idx].clone(),
        "domain": torch.full((k,), d, dtype=torch.long),
        "glyph": idx.clone(),
    }
