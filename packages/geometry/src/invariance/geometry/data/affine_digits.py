"""Digits on a 28x28 canvas with affine-warped test sets (an offline, CPU-sized affNIST analogue).

``sklearn.datasets.load_digits`` (1797 8x8 images, 16 grey levels, shipped with scikit-learn) is
upsampled x2 (bilinear) to 16x16 and pasted at the centre of a 28x28 canvas, values in [0, 1].
Training and validation images are untransformed; test images are warped by random affine maps
``p -> A p + t`` of the image plane (coordinates in [-1, 1], x along the width, y along the
height), resampled bilinearly with zero fill:

* ``test_gl``: ``A = R(angle) @ Shear(s) @ diag(sx, sy)`` with uniform ``angle`` in
  ``±rot_deg``, shear ``s`` in ``±shear``, scales in ``[scale_min, scale_max]`` (GL+(2));
* ``test_sl``: the same without the scales (``det A = 1``, SL(2));
* ``test``: untransformed held-out images.

Translations are uniform in ``±translate`` pixels per axis. The split is a fixed function of
``seed``; the warps are drawn from ``seed`` as well.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = [
    "AFFINE_DIGIT_SPLITS",
    "AffineDigits",
    "digits_canvas",
    "random_affine",
    "warp_images",
    "make_affine_digits",
]

AFFINE_DIGIT_SPLITS = ("train", "val", "test", "test_gl", "test_sl")


def _num(name: str, v: object, lo: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v) or (lo is not None and v < lo):
        raise ValueError(f"{name} must be finite and >= {lo}, got {v}")
    return float(v)


@functools.lru_cache(maxsize=1)
def _digits16() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = F.interpolate(x, size=(16, 16), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.tensor(d.target, dtype=torch.long)


def digits_canvas(canvas: int = 28) -> tuple[Tensor, Tensor]:
    """All 1797 sklearn digits as (1797, 1, canvas, canvas) float32 in [0, 1] and labels (1797,)
    (new tensors on every call; the 16x16 upsampled digits are cached)."""
    if isinstance(canvas, bool) or not isinstance(canvas, int) or canvas < 16:
        raise ValueError(f"canvas must be an int >= 16, got {canvas!r}")
    x, y = _digits16()
    out = torch.zeros(x.shape[0], 1, canvas, canvas)
    o = (canvas - 16) // 2
    out[:, :, o : o + 16, o : o + 16] = x
    return out, y.clone()


def random_affine(
    n: int,
    *,
    group: str = "gl2",
    rot_deg: float = 30.0,
    shear: float = 0.3,
    scale_min: float = 0.8,
    scale_max: float = 1.2,
    translate: float = 2.0,
    canvas: int = 28,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """``n`` random affine maps: ``A`` (n, 2, 2) (det 1 for ``group="sl2"``) and ``t`` (n, 2) in
    normalised coordinates (``translate`` is in pixels of a ``canvas``-wide image)."""
    if group not in ("gl2", "sl2"):
        raise ValueError(f"group must be 'gl2' or 'sl2', got {group!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    rot_deg, shear = _num("rot_deg", rot_deg, 0.0), _num("shear", shear, 0.0)
    scale_min, scale_max = _num("scale_min", scale_min, 1e-3), _num("scale_max", scale_max, 1e-3)
    if scale_max < scale_min:
        raise ValueError(f"scale_max must be >= scale_min, got {scale_max} < {scale_min}")
    translate = _num("translate", translate, 0.0)

    def u(lo: float, hi: float, size: tuple[int, ...] = (n,)) -> Tensor:
        return lo + (hi - lo) * torch.rand(size, generator=generator, dtype=torch.float64)

    ang = u(-rot_deg, rot_deg) * math.pi / 180.0
    s = u(-shear, shear)
    c, si = torch.cos(ang), torch.sin(ang)
    rot = torch.stack((torch.stack((c, -si), -1), torch.stack((si, c), -1)), -2)
    sh = torch.eye(2, dtype=torch.float64).repeat(n, 1, 1)
    sh[:, 0, 1] = s
    a = rot @ sh
    if group == "gl2":
        a = a @ torch.diag_embed(u(scale_min, scale_max, (n, 2)))
    t = u(-translate, translate, (n, 2)) * (2.0 / canvas)
    return a.float(), t.float()


def warp_images(x: Tensor, a: Tensor, t: Tensor) -> Tensor:
    """``out(p) = x(A^-1 (p - t))``: the image moved by ``p -> A p + t`` (bilinear, zero fill).
    ``x`` (B, C, H, W), ``a`` (B, 2, 2) invertible, ``t`` (B, 2)."""
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() != 4:
        raise ValueError(f"x must be a float (B, C, H, W) tensor, got {getattr(x, 'shape', x)}")
    if not isinstance(a, Tensor) or a.shape != (x.shape[0], 2, 2):
        raise ValueError(f"a must be ({x.shape[0]}, 2, 2), got {getattr(a, 'shape', a)}")
    if not isinstance(t, Tensor) or t.shape != (x.shape[0], 2):
        raise ValueError(f"t must be ({x.shape[0]}, 2), got {getattr(t, 'shape', t)}")
    det = torch.linalg.det(a.double())
    if not torch.isfinite(a).all() or (det.abs() < 1e-8).any():
        raise ValueError("a must be finite and invertible")
    a_inv = torch.linalg.inv(a.double())
    theta = torch.cat((a_inv, -(a_inv @ t.double().unsqueeze(-1))), -1).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class AffineDigits(Dataset):
    """Images ``x`` (N, 1, H, W) and labels ``y`` (N,); items are ``{"x", "y"}`` dicts."""

    def __init__(self, x: Tensor, y: Tensor, split: str) -> None:
        self.x, self.y, self.split = x, y, split

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i]}

    def __repr__(self) -> str:
        return f"AffineDigits(split={self.split!r}, n={len(self)}, size={tuple(self.x.shape[-2:])})"


def make_affine_digits(
    split: str,
    *,
    seed: int = 0,
    n_val: int = 180,
    n_test: int = 360,
    n_train: int | None = None,
    rot_deg: float = 30.0,
    shear: float = 0.3,
    scale_min: float = 0.8,
    scale_max: float = 1.2,
    translate: float = 2.0,
    canvas: int = 28,
) -> AffineDigits:
    """One split of the digits (see the module docstring): ``train``, ``val`` (untransformed),
    ``test`` (untransformed), ``test_gl`` / ``test_sl`` (warped). ``n_train`` caps the training
    set (default: all remaining images)."""
    if split not in AFFINE_DIGIT_SPLITS:
        raise ValueError(f"split must be one of {list(AFFINE_DIGIT_SPLITS)}, got {split!r}")
    for name, v in (("n_val", n_val), ("n_test", n_test)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    x, y = digits_canvas(canvas)
    if n_val + n_test >= x.shape[0]:
        raise ValueError(f"n_val + n_test must be < {x.shape[0]}, got {n_val + n_test}")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    test_idx, val_idx = perm[:n_test], perm[n_test : n_test + n_val]
    train_idx = perm[n_test + n_val :]
    if n_train is not None:
        if isinstance(n_train, bool) or not isinstance(n_train, int) or n_train < 1:
            raise ValueError(f"n_train must be an int >= 1, got {n_train!r}")
        train_idx = train_idx[:n_train]
    idx = {"train": train_idx, "val": val_idx}.get(split, test_idx)
    xs, ys = x[idx], y[idx]
    if split in ("test_gl", "test_sl"):
        g = torch.Generator().manual_seed(10_000 + seed)
        a, t = random_affine(
            xs.shape[0],
            group="gl2" if split == "test_gl" else "sl2",
            rot_deg=rot_deg,
            shear=shear,
            scale_min=scale_min,
            scale_max=scale_max,
            translate=translate,
            canvas=canvas,
            generator=g,
        )
        xs = warp_images(xs, a, t)
    return AffineDigits(xs.contiguous(), ys, split)
