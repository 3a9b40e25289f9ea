"""Procedural multi-scale detection scenes (``DigitScenes``) with exact boxes.

COCO needs a download, so the SEPC experiment uses scenes built from scikit-learn's bundled 8x8
digits: 1-``max_objects`` digits per image, each upsampled to a log-uniform size in
``obj_size`` (a wide scale range, so that inter-level correlation in the feature pyramid
matters), with random colours, on textured backgrounds (gradients, noise, stripes, distractor
blobs). Boxes are the tight bounds of the rendered strokes (ground truth); labels are the digit
classes 0-9. Glyphs are split by source index (train: even, test: odd).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from invariance.vision._checks import check_int
from invariance.vision.data.digit_styles import load_digit_glyphs

__all__ = ["make_digit_scenes", "DigitScenes"]


def make_digit_scenes(
    n: int,
    *,
    seed: int,
    size: int = 64,
    max_objects: int = 4,
    obj_size: tuple[float, float] = (8.0, 40.0),
    split: str = "train",
) -> dict[str, Tensor]:
    """Render ``n`` detection scenes.

    Args:
        n: number of images. seed: private generator seed.
        size: image side (default: 64). max_objects: objects per image, 1..max (default: 4).
        obj_size: range of the object side in pixels, log-uniform (default: (8, 40)).
        split: ``"train"`` or ``"test"`` glyphs.

    Returns:
        dict with ``image`` (n, 3, size, size) in [0, 1], ``boxes`` (n, max_objects, 4) xyxy
        (padding rows are -1), ``labels`` (n, max_objects) (-1 padding) and ``count`` (n,).
    """
    check_int(n, "n")
    check_int(seed, "seed", lo=0)
    check_int(size, "size", lo=8)
    check_int(max_objects, "max_objects")
    if n < 1 or max_objects < 1:
        raise ValueError(f"n and max_objects must be >= 1, got {n}, {max_objects}")
    if not 2 <= obj_size[0] <= obj_size[1] <= size:
        raise ValueError(f"obj_size must satisfy 2 <= lo <= hi <= size, got {obj_size}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    glyphs, labels = load_digit_glyphs()
    pool = torch.arange(0 if split == "train" else 1, len(glyphs), 2)
    g = torch.Generator().manual_seed(int(seed))
    yy, xx = torch.meshgrid(
        torch.arange(size, dtype=torch.float32),
        torch.arange(size, dtype=torch.float32),
        indexing="ij",
    )
    images = torch.empty(n, 3, size, size)
    boxes = torch.full((n, max_objects, 4), -1.0)
    labs = torch.full((n, max_objects), -1, dtype=torch.long)
    count = torch.zeros(n, dtype=torch.long)
    lo, hi = math.log(obj_size[0]), math.log(obj_size[1])
    for i in range(n):
        c1, c2 = torch.rand(3, 1, 1, generator=g) * 0.5, torch.rand(3, 1, 1, generator=g) * 0.5
        ang = 2 * math.pi * float(torch.rand((), generator=g))
        t = (math.cos(ang) * xx + math.sin(ang) * yy) / size
        bg = c1 + (c2 - c1) * t.clamp(0, 1)
        freq = 0.2 + 0.5 * float(torch.rand((), generator=g))
        bg = bg + 0.08 * torch.sin(freq * (xx * math.sin(ang) - yy * math.cos(ang)))
        for _ in range(2):  # distractor blobs
            cx, cy = (torch.rand(2, generator=g) * size).tolist()
            r = 2 + 4 * float(torch.rand((), generator=g))
            bg = bg + 0.25 * torch.rand(3, 1, 1, generator=g) * torch.exp(
                -((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)
            )
        img = bg + 0.03 * torch.randn(3, size, size, generator=g)
        k = int(torch.randint(1, max_objects + 1, (), generator=g))
        placed: list[list[float]] = []
        for _ in range(k):
            for _attempt in range(10):
                s = math.exp(lo + (hi - lo) * float(torch.rand((), generator=g)))
                x0 = float(torch.rand((), generator=g)) * (size - s)
                y0 = float(torch.rand((), generator=g)) * (size - s)
                cand = [x0, y0, x0 + s, y0 + s]
                if all(_iou(cand, p) < 0.2 for p in placed):
                    break
            else:
                continue
            j = int(pool[torch.randint(0, len(pool), (), generator=g)])
            theta = torch.tensor(
                [
                    [
                        [size / s, 0.0, (size - 2 * x0 - s) / s],
                        [0.0, size / s, (size - 2 * y0 - s) / s],
                    ]
                ]
            )
            # maps output pixel centres to glyph coordinates (align_corners=False convention)
            grid = torch.nn.functional.affine_grid(theta, [1, 1, size, size], align_corners=False)
            m = torch.nn.functional.grid_sample(
                glyphs[j][None, None],
                grid,
                mode="bilinear",
                padding_mode="zeros",
                align_corners=False,
            )[0, 0]
            on = m > 0.25
            if on.sum() < 3:
                continue
            ys, xs = on.nonzero(as_tuple=True)
            box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]
            colour = 0.5 + 0.5 * torch.rand(3, 1, 1, generator=g)
            img = img * (1 - m) + colour * m
            q = len(placed)
            placed.append(cand)
            boxes[i, q] = torch.tensor(box)
            labs[i, q] = labels[j]
        count[i] = len(placed)
        images[i] = img.clamp(0, 1)
    return {"image": images, "boxes": boxes, "labels": labs, "count": count}


def _iou(a: list[float], b: list[float]) -> float:
    """IoU of two xyxy boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class DigitScenes(torch.utils.data.Dataset):
    """Map-style dataset over :func:`make_digit_scenes` output (dict items, padded targets)."""

    def __init__(self, data: dict[str, Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return self.data["image"].shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}
