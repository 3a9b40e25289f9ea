"""Procedural ModelNet-like shape classification with exact normals.

Each class is a parametric surface (smooth primitives with analytic normals) or a convex
polyhedron (exact face normals), sampled area-uniformly. A class-preserving random anisotropic
scaling ``diag(U[1-jitter, 1+jitter])`` is applied per shape (normals transform by the inverse
transpose and are renormalised; sampling stays area-uniform by importance resampling), then the
cloud is centred and scaled to max radius 1, and Gaussian noise of std ``noise`` is added to the
positions (normals stay those of the clean surface). Rotated splits apply a Haar-random SO(3)
rotation per shape to points and normals.

Ground truth: the class label ``y`` and the exact normals ``normal``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..ops._checks import check_int, check_real

__all__ = ["SHAPE_CLASSES", "PointCloudDataset", "make_shape_classes", "sample_shape"]

_F64 = torch.float64


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def _u(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=_F64)


def _pieces(n: int, areas: Sequence[float], g: torch.Generator) -> list[int]:
    """Split n samples among surface pieces proportionally to their areas (multinomial)."""
    a = torch.tensor(areas, dtype=_F64)
    idx = torch.multinomial(a / a.sum(), n, replacement=True, generator=g)
    return [int((idx == i).sum()) for i in range(len(areas))]


def _resample(
    p: Tensor, nrm: Tensor, w: Tensor, n: int, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Importance resampling: pick n of the candidates with probability ∝ w (area density)."""
    idx = torch.multinomial(w / w.sum(), n, replacement=False, generator=g)
    return p[idx], nrm[idx]


# -- smooth surfaces ---------------------------------------------------------------------------


def _sphere(n, g, r=1.0):
    u = _unit(torch.randn(n, 3, generator=g, dtype=_F64))
    return r * u, u


def _ellipsoid(n, g):
    A = torch.tensor([1.0, 0.7, 0.45], dtype=_F64)
    u = _unit(torch.randn(3 * n, 3, generator=g, dtype=_F64))
    nrm = u / A  # inverse-transpose of diag(A)
    w = nrm.norm(dim=-1)  # area density of the linear image of the sphere (up to det A)
    return _resample(u * A, _unit(nrm), w, n, g)


def _disk(n, g, r, z, up):
    rho = r * _u(g, n).sqrt()
    phi = 2 * math.pi * _u(g, n)
    p = torch.stack([rho * phi.cos(), rho * phi.sin(), torch.full_like(rho, z)], -1)
    nz = torch.zeros(n, 3, dtype=_F64)
    nz[:, 2] = 1.0 if up else -1.0
    return p, nz


def _cyl_side(n, g, r, z0, z1):
    phi = 2 * math.pi * _u(g, n)
    z = z0 + (z1 - z0) * _u(g, n)
    nrm = torch.stack([phi.cos(), phi.sin(), torch.zeros_like(phi)], -1)
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1), nrm


def _cylinder(n, g, r=0.6, h=0.8):
    k = _pieces(n, [2 * math.pi * r * 2 * h, math.pi * r * r, math.pi * r * r], g)
    parts = [_cyl_side(k[0], g, r, -h, h), _disk(k[1], g, r, h, True), _disk(k[2], g, r, -h, False)]
    return torch.cat([p for p, _ in parts]), torch.cat([q for _, q in parts])


def _cone(n, g, r=0.8, zb=-0.6, za=0.9):
    H = za - zb
    slant = math.hypot(r, H)
    k = _pieces(n, [math.pi * r * slant, math.pi * r * r], g)
    s = _u(g, k[0]).sqrt()  # fraction from apex, area ∝ s
    phi = 2 * math.pi * _u(g, k[0])
    p = torch.stack([s * r * phi.cos(), s * r * phi.sin(), za - s * H], -1)
    nrm = _unit(torch.stack([H * phi.cos(), H * phi.sin(), torch.full_like(phi, r)], -1))
    pb, nb = _disk(k[1], g, r, zb, False)
    return torch.cat([p, pb]), torch.cat([nrm, nb])


def _torus(n, g, R=0.7, r=0.28):
    m = 3 * n
    u = 2 * math.pi * _u(g, m)
    v = 2 * math.pi * _u(g, m)
    nrm = torch.stack([v.cos() * u.cos(), v.cos() * u.sin(), v.sin()], -1)
    p = torch.stack([(R + r * v.cos()) * u.cos(), (R + r * v.cos()) * u.sin(), r * v.sin()], -1)
    return _resample(p, nrm, R + r * v.cos(), n, g)


def _capsule(n, g, r=0.4, L=0.5):
    k = _pieces(n, [2 * math.pi * r * 2 * L, 4 * math.pi * r * r], g)
    ps, ns = _cyl_side(k[0], g, r, -L, L)
    u = _unit(torch.randn(k[1], 3, generator=g, dtype=_F64))
    ph = r * u + torch.where(u[:, 2:] >= 0, 1.0, -1.0) * torch.tensor([0.0, 0.0, L], dtype=_F64)
    return torch.cat([ps, ph]), torch.cat([ns, u])


def _hemisphere(n, g, r=1.0):
    k = _pieces(n, [2 * math.pi * r * r, math.pi * r * r], g)
    u = _unit(torch.randn(k[0], 3, generator=g, dtype=_F64))
    u = torch.cat([u[:, :2], u[:, 2:].abs()], -1)
    pd, nd = _disk(k[1], g, r, 0.0, False)
    return torch.cat([r * u, pd]), torch.cat([u, nd])


# -- convex polyhedra --------------------------------------------------------------------------


def _convex_polyhedron(vertices: Sequence[Sequence[float]]) -> Callable:
    V = torch.tensor(vertices, dtype=_F64)
    cache: list = []

    def sample(n, g):
        if not cache:  # hull triangles, areas and outward normals, computed once
            from scipy.spatial import ConvexHull

            F = torch.as_tensor(ConvexHull(V.numpy()).simplices, dtype=torch.long)
            a, b, c = V[F[:, 0]], V[F[:, 1]], V[F[:, 2]]
            cr = torch.linalg.cross(b - a, c - a, dim=-1)
            fn = _unit(cr)
            out = ((a + b + c) / 3 - V.mean(0)) * fn
            fn = torch.where(out.sum(-1, keepdim=True) < 0, -fn, fn)  # outward (convex)
            cache.extend([a, b, c, 0.5 * cr.norm(dim=-1), fn])
        a, b, c, area, fn = cache
        f = torch.multinomial(area / area.sum(), n, replacement=True, generator=g)
        r1, r2 = _u(g, n, 1).sqrt(), _u(g, n, 1)
        p = (1 - r1) * a[f] + r1 * (1 - r2) * b[f] + r1 * r2 * c[f]
        return p, fn[f]

    return sample


def _box(x, y, z):
    return [[sx * x, sy * y, sz * z] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]


SHAPE_CLASSES: dict[str, Callable[[int, torch.Generator], tuple[Tensor, Tensor]]] = {
    "sphere": _sphere,
    "cube": _convex_polyhedron(_box(0.6, 0.6, 0.6)),
    "cone": _cone,
    "torus": _torus,
    "cuboid": _convex_polyhedron(_box(1.0, 0.55, 0.3)),
    "tetrahedron": _convex_polyhedron([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]),
    "cylinder": _cylinder,
    "hemisphere": _hemisphere,
    "octahedron": _convex_polyhedron(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]]
    ),
    "capsule": _capsule,
    "ellipsoid": _ellipsoid,
    "square_pyramid": _convex_polyhedron(
        [[0.6, 0.6, -0.5], [0.6, -0.6, -0.5], [-0.6, 0.6, -0.5], [-0.6, -0.6, -0.5], [0, 0, 0.9]]
    ),
    "triangular_prism": _convex_polyhedron(
        [[1.0, 0, z] for z in (-0.7, 0.7)]
        + [[-0.5, 0.866, z] for z in (-0.7, 0.7)]
        + [[-0.5, -0.866, z] for z in (-0.7, 0.7)]
    ),
}
"""Name -> sampler ``(n, generator) -> (points (n,3), unit normals (n,3))`` (13 classes)."""


def sample_shape(
    name: str,
    n_points: int,
    *,
    generator: torch.Generator,
    jitter: float = 0.2,
    noise: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """One shape of class ``name``: (n_points, 3) points (centred, max radius 1) and exact normals."""  # noqa: E501
    if name not in SHAPE_CLASSES:
        raise ValueError(f"unknown shape class {name!r}; choose from {sorted(SHAPE_CLASSES)}")
    check_int(n_points, "n_points", 1)
    check_real(jitter, "jitter", 0.0, 1.0, hi_open=True)
    check_real(noise, "noise", 0.0)
    g = generator
    p, nrm = SHAPE_CLASSES[name](2 * n_points, g)
    A = 1 + jitter * (2 * _u(g, 3) - 1)
    nrm = nrm / A
    p, nrm = _resample(p * A, _unit(nrm), nrm.norm(dim=-1), n_points, g)
    p = p - p.mean(0)
    p = p / p.norm(dim=-1).max().clamp_min(1e-12)
    if noise > 0:
        p = p + noise * torch.randn(p.shape, generator=g, dtype=_F64)
    return p, nrm


class PointCloudDataset(Dataset):
    """In-memory point clouds: ``pos`` (S, N, 3), ``normal`` (S, N, 3), ``y`` (S,).

    Items are dicts ``{"pos", "normal", "y"}`` (torch's default collate stacks them).
    """

    def __init__(self, pos: Tensor, normal: Tensor, y: Tensor, classes: Sequence[str] = ()) -> None:
        if pos.dim() != 3 or pos.shape[-1] != 3 or normal.shape != pos.shape:
            raise ValueError(
                f"pos/normal must both be (S, N, 3), got {tuple(pos.shape)} and {tuple(normal.shape)}"  # noqa: E501
            )
        if y.shape != pos.shape[:1]:
            raise ValueError(f"y must have shape ({pos.shape[0]},), got {tuple(y.shape)}")
        self.pos, self.normal, self.y, self.classes = pos, normal, y, list(classes)

    def __len__(self) -> int:
        return self.pos.shape[0]

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"pos": self.pos[i], "normal": self.normal[i], "y": self.y[i]}

    def rotated(self, *, seed: int) -> PointCloudDataset:
        """A copy with an independent Haar-random SO(3) rotation applied to each shape."""
        from invariance.core.groups import haar_so3

        g = torch.Generator().manual_seed(seed)
        R = haar_so3(len(self), generator=g, dtype=_F64).to(self.pos.dtype)
        return PointCloudDataset(
            self.pos @ R.transpose(1, 2), self.normal @ R.transpose(1, 2), self.y, self.classes
        )


def make_shape_classes(
    n_per_class: int,
    n_points: int = 256,
    *,
    seed: int,
    classes: Sequence[str] | None = None,
    rotation: Literal["none", "so3"] = "none",
    jitter: float = 0.2,
    noise: float = 0.01,
    dtype: torch.dtype = torch.float32,
) -> PointCloudDataset:
    """A seeded shape-classification set (the ModelNet analogue).

    Args:
        n_per_class (int): shapes per class. n_points (int): points per shape (default 256).
        seed (int): RNG seed (all randomness comes from it).
        classes (list[str], optional): subset of :data:`SHAPE_CLASSES` (default: all 13).
        rotation (str): ``"none"`` (aligned, the "z" protocol's train/test) or ``"so3"``
            (Haar-random rotation per shape, the rotated test split) (default ``"none"``).
        jitter (float): anisotropic scale jitter (default 0.2). noise (float): position noise std.

    Returns:
        :class:`PointCloudDataset` with shapes ordered class by class.
    """
    names = list(SHAPE_CLASSES) if classes is None else list(classes)
    if not names:
        raise ValueError("classes must not be empty")
    check_int(n_per_class, "n_per_class", 1)
    check_int(n_points, "n_points", 1)
    check_int(seed, "seed", 0)
    check_real(jitter, "jitter", 0.0, 1.0, hi_open=True)
    check_real(noise, "noise", 0.0)
    if rotation not in ("none", "so3"):
        raise ValueError(f"rotation must be 'none' or 'so3', got {rotation!r}")
    g = torch.Generator().manual_seed(seed)
    P, N, Y = [], [], []
    for ci, name in enumerate(names):
        for _ in range(n_per_class):
            p, nrm = sample_shape(name, n_points, generator=g, jitter=jitter, noise=noise)
            P.append(p)
            N.append(nrm)
            Y.append(ci)
    ds = PointCloudDataset(
        torch.stack(P).to(dtype), torch.stack(N).to(dtype), torch.tensor(Y), names
    )
    if rotation == "so3":
        ds = ds.rotated(seed=seed + 7919)
    return ds
