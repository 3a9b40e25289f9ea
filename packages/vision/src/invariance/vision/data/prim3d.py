"""Prim3D-10: ten object classes built from textured primitives, with random proportions.

The offline stand-in for the IM3D objects of the viewpoint-robustness papers: each class is a
fixed arrangement of spheres, boxes and cylinders (mug, table, chair, lamp, snowman, car, tree,
bottle, dumbbell, house) whose sizes, colours and textures are drawn per instance, so a
classifier has to read the shape. Objects fit in a ball of radius about 1 around the origin and
render with :func:`invariance.vision.render.render` from cameras at distance 3-5.
"""

from __future__ import annotations

import torch

from invariance.vision._checks import check_int
from invariance.vision.render import Scene

__all__ = ["PRIM3D_CLASSES", "make_prim3d"]

PRIM3D_CLASSES = (
    "mug",
    "table",
    "chair",
    "lamp",
    "snowman",
    "car",
    "tree",
    "bottle",
    "dumbbell",
    "house",
)


def _u(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _p(kind: str, center, scale, angles=(0.0, 0.0, 0.0), **kw) -> dict:
    return dict(kind=kind, center=center, scale=scale, angles=angles, **kw)


def _legs(g, xs: float, zs: float, y0: float, y1: float, r: float) -> list[dict]:
    h = (y1 - y0) / 2
    return [
        _p("cylinder", (sx * xs, y0 + h, sz * zs), (r, h, r)) for sx in (-1, 1) for sz in (-1, 1)
    ]


def _object(cls: int, g: torch.Generator) -> list[dict]:
    u = lambda lo, hi: _u(g, lo, hi)  # noqa: E731
    if cls == 0:  # mug: body + handle
        r, h = u(0.4, 0.55), u(0.35, 0.5)
        return [
            _p("cylinder", (0, 0, 0), (r, h, r)),
            _p("box", (r + 0.12, 0, 0), (0.12, h * 0.6, 0.06)),
        ]
    if cls == 1:  # table: top + 4 legs
        w, dpt, y = u(0.7, 0.9), u(0.4, 0.6), u(0.15, 0.35)
        return [_p("box", (0, y, 0), (w, 0.06, dpt))] + _legs(
            g, w * 0.85, dpt * 0.8, -0.6, y - 0.05, 0.05
        )
    if cls == 2:  # chair: seat + back + 4 legs
        w, bh = u(0.35, 0.45), u(0.5, 0.7)
        return [
            _p("box", (0, 0, 0), (w, 0.05, w)),
            _p("box", (0, bh / 2, -w + 0.04), (w, bh / 2, 0.04)),
        ] + _legs(g, w * 0.85, w * 0.85, -0.6, -0.05, 0.04)
    if cls == 3:  # lamp: base + pole + shade
        sh = u(0.3, 0.45)
        return [
            _p("cylinder", (0, -0.75, 0), (u(0.3, 0.4), 0.05, 0.35)),
            _p("cylinder", (0, -0.15, 0), (0.04, 0.6, 0.04)),
            _p("cylinder", (0, 0.55, 0), (sh, u(0.15, 0.25), sh)),
        ]
    if cls == 4:  # snowman: three spheres
        r1, r2, r3 = u(0.4, 0.5), u(0.28, 0.35), u(0.18, 0.24)
        y1 = -0.9 + r1
        y2 = y1 + r1 + r2 * 0.8
        y3 = y2 + r2 + r3 * 0.8
        return [
            _p("sphere", (0, y1, 0), (r1, r1, r1)),
            _p("sphere", (0, y2, 0), (r2, r2, r2)),
            _p("sphere", (0, y3, 0), (r3, r3, r3)),
        ]
    if cls == 5:  # car: body + cabin + 4 wheels
        lx, lz = u(0.75, 0.95), u(0.35, 0.45)
        wr = u(0.16, 0.22)
        wheels = [
            _p("cylinder", (sx * lx * 0.65, -0.35, sz * lz), (wr, 0.06, wr), (0.0, 90.0, 0.0))
            for sx in (-1, 1)
            for sz in (-1, 1)
        ]
        return [
            _p("box", (0, -0.2, 0), (lx, 0.16, lz)),
            _p("box", (-0.1, 0.07, 0), (lx * 0.5, 0.12, lz * 0.9)),
        ] + wheels
    if cls == 6:  # tree: trunk + two stacked crowns
        c1, c2 = u(0.45, 0.6), u(0.3, 0.42)
        return [
            _p("cylinder", (0, -0.6, 0), (0.08, 0.3, 0.08)),
            _p("sphere", (0, 0.0, 0), (c1, c1 * 0.8, c1)),
            _p("sphere", (0, 0.55, 0), (c2, c2 * 0.9, c2)),
        ]
    if cls == 7:  # bottle: body + shoulder + neck
        r = u(0.25, 0.33)
        return [
            _p("cylinder", (0, -0.35, 0), (r, 0.5, r)),
            _p("sphere", (0, 0.15, 0), (r, r * 0.7, r)),
            _p("cylinder", (0, 0.5, 0), (0.09, u(0.2, 0.3), 0.09)),
        ]
    if cls == 8:  # dumbbell: bar + two weights
        L, R = u(0.55, 0.7), u(0.25, 0.33)
        return [
            _p("cylinder", (0, 0, 0), (0.05, L, 0.05), (0.0, 0.0, 90.0)),
            _p("sphere", (-L, 0, 0), (R, R, R)),
            _p("sphere", (L, 0, 0), (R, R, R)),
        ]
    # house: walls + 45-degree roof prism (a box turned about z)
    w, hh = u(0.55, 0.7), u(0.3, 0.4)
    rs = w / 2**0.5
    return [
        _p("box", (0, -0.35, 0), (w, hh, u(0.45, 0.6))),
        _p("box", (0, -0.35 + hh, 0), (rs, rs, 0.62), (0.0, 0.0, 45.0)),
    ]


def make_prim3d(
    n_per_class: int,
    *,
    seed: int = 0,
    classes: tuple[int, ...] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Scene, torch.Tensor]:
    """``n_per_class`` random instances of each class (all ten, or the indices in ``classes``);
    returns the :class:`~invariance.vision.render.Scene` (one scene per object) and the labels
    (positions in ``classes``). Colours are drawn independently per primitive, textures per
    object, so colour does not give the class away."""
    n_per_class = check_int(n_per_class, "n_per_class")
    classes = tuple(range(len(PRIM3D_CLASSES))) if classes is None else tuple(classes)
    if not classes or any(
        isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < 10 for c in classes
    ):
        raise ValueError(
            f"classes must be a non-empty tuple of class indices in 0..9, got {classes}"
        )
    g = torch.Generator().manual_seed(int(seed))
    scenes, labels = [], []
    for li, c in enumerate(classes):
        for _ in range(n_per_class):
            prims = _object(c, g)
            tex = _u(g, 0.0, 0.5)
            for pr in prims:
                pr["color"] = tuple(
                    0.15 + 0.8 * torch.rand(3, generator=g).tolist()[i] for i in range(3)
                )
                pr["texture"] = tex
                pr["material"] = _u(g, 0.2, 1.0)
            scenes.append(prims)
            labels.append(li)
    return Scene.from_primitives(scenes, dtype=dtype), torch.tensor(labels)
