"""Seeded registration pairs with ground truth: asymmetric assemblies of primitives (or a real
mesh), two independently sampled fragments, half-space crops for partial overlap, a random rigid
motion, noise, exact normals, the ground-truth pose and the overlap ratio.

* An *assembly* is 3-5 primitives (ellipsoids, boxes, closed cylinders, tori) with random sizes,
  orientations and offsets, scaled to a diameter of about 2. Single primitives are symmetric (the
  pose is ambiguous), assemblies generically are not.
* Each fragment is sampled from the whole surface independently (area-uniform), so no point is
  shared exactly between the two clouds; normals are the surfaces' exact normals.
* Overlap: fragment A keeps the points on one side of a random plane, fragment B those on the
  other side of a parallel plane, the two kept regions overlapping in a band. ``split="normal"``
  asks for an overlap ratio above 0.3, ``"low"`` for 0.1-0.3 (the 3DLoMatch analogue), ``"full"``
  crops nothing. The overlap ratio is the fraction of source points that lie in the target's
  kept region (exact, independent of the sampling density); ``meta["overlap_nn"]`` also gives
  the fraction with a target point within ``tau`` in the common frame before noise (the
  GeoTransformer definition, which undercounts at low sampling density).
* Pose: ``rotation="so3"`` rotates both clouds by independent Haar-random rotations, ``"z"`` about
  the z axis only, ``"none"`` not at all; both get a translation ``~ N(0, translation_std^2)``.
  The ground truth maps source to target: ``tgt ≈ src @ R.T + t``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from invariance.core.groups import SO3
from invariance.geometry.data.meshes import PYVISTA_MESHES, load_pyvista_mesh, sample_mesh

__all__ = [
    "Primitive",
    "Assembly",
    "random_assembly",
    "RegistrationPair",
    "make_pair",
    "RegistrationPairs",
    "SPLITS",
]

SPLITS = ("full", "normal", "low")
_KINDS = ("ellipsoid", "box", "cylinder", "torus")


def _rand(g: torch.Generator, *shape: int) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


def _unit(v: Tensor) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True)


@dataclass
class Primitive:
    """One surface of an assembly: ``kind`` with ``size`` parameters, placed by ``R``/``offset``.

    Sizes: ellipsoid (a, b, c) semi-axes; box (a, b, c) half-extents; cylinder (radius,
    half-height); torus (major radius, minor radius)."""

    kind: str
    size: tuple[float, ...]
    R: Tensor
    offset: Tensor

    @property
    def area(self) -> float:
        s = self.size
        if self.kind == "ellipsoid":  # Knud Thomsen's approximation (< 1.1 % error)
            p = 1.6075
            a, b, c = s
            return 4 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3) ** (1 / p)
        if self.kind == "box":
            a, b, c = s
            return 8 * (a * b + b * c + a * c)
        if self.kind == "cylinder":
            r, h = s
            return 2 * math.pi * r * (2 * h) + 2 * math.pi * r * r
        r_major, r_minor = s
        return 4 * math.pi**2 * r_major * r_minor

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` area-uniform points and their exact unit normals, in the assembly frame."""
        p, nrm = _SAMPLERS[self.kind](n, g, self.size)
        return p @ self.R.T + self.offset, nrm @ self.R.T


def _ellipsoid(n: int, g: torch.Generator, s: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    a, b, c = s
    abc = torch.tensor([a, b, c], dtype=torch.float64)
    wmax = max(a * b, b * c, a * c)
    out: list[Tensor] = []
    got = 0
    while got < n:  # rejection: the map from the unit sphere stretches area by abc |u / abc|
        u = _unit(torch.randn(2 * n + 16, 3, generator=g, dtype=torch.float64))
        w = (a * b * c) * (u / abc).norm(dim=-1) / wmax
        keep = u[_rand(g, len(u)) < w]
        out.append(keep)
        got += len(keep)
    u = torch.cat(out)[:n]
    p = u * abc
    return p, _unit(p / abc**2)


def _box(n: int, g: torch.Generator, s: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    a, b, c = s
    half = torch.tensor([a, b, c], dtype=torch.float64)
    areas = torch.tensor([b * c, b * c, a * c, a * c, a * b, a * b], dtype=torch.float64)
    face = torch.multinomial(areas / areas.sum(), n, replacement=True, generator=g)
    axis = face // 2
    sign = torch.where(face % 2 == 0, 1.0, -1.0).to(torch.float64)
    p = (2 * _rand(g, n, 3) - 1) * half
    p[torch.arange(n), axis] = sign * half[axis]
    nrm = torch.zeros(n, 3, dtype=torch.float64)
    nrm[torch.arange(n), axis] = sign
    return p, nrm


def _cylinder(n: int, g: torch.Generator, s: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    r, h = s
    side, cap = 2 * math.pi * r * 2 * h, math.pi * r * r
    part = torch.multinomial(
        torch.tensor([side, cap, cap], dtype=torch.float64), n, replacement=True, generator=g
    )
    th = 2 * math.pi * _rand(g, n)
    z = (2 * _rand(g, n) - 1) * h
    rad = r * _rand(g, n).sqrt()
    p = torch.stack([r * th.cos(), r * th.sin(), z], -1)
    nrm = torch.stack([th.cos(), th.sin(), torch.zeros_like(th)], -1)
    for k, zs in ((1, 1.0), (2, -1.0)):
        m = part == k
        p[m] = torch.stack([rad[m] * th[m].cos(), rad[m] * th[m].sin(), zs * h + 0 * th[m]], -1)
        nrm[m] = torch.tensor([0.0, 0.0, zs], dtype=torch.float64)
    return p, nrm


def _torus(n: int, g: torch.Generator, s: tuple[float, ...]) -> tuple[Tensor, Tensor]:
    big, small = s
    out: list[Tensor] = []
    got = 0
    while got < n:  # the area element is proportional to (big + small cos phi)
        phi = 2 * math.pi * _rand(g, 2 * n + 16)
        keep = phi[_rand(g, len(phi)) < (big + small * phi.cos()) / (big + small)]
        out.append(keep)
        got += len(keep)
    phi = torch.cat(out)[:n]
    th = 2 * math.pi * _rand(g, n)
    ring = big + small * phi.cos()
    p = torch.stack([ring * th.cos(), ring * th.sin(), small * phi.sin()], -1)
    nrm = torch.stack([phi.cos() * th.cos(), phi.cos() * th.sin(), phi.sin()], -1)
    return p, nrm


_SAMPLERS = {"ellipsoid": _ellipsoid, "box": _box, "cylinder": _cylinder, "torus": _torus}


@dataclass
class Assembly:
    """A union of primitive surfaces, normalised by ``center``/``scale`` (diameter about 2)."""

    parts: list[Primitive]
    center: Tensor = field(default_factory=lambda: torch.zeros(3, dtype=torch.float64))
    scale: float = 1.0

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """``n`` area-uniform points over all parts with exact normals, normalised frame."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        areas = torch.tensor([p.area for p in self.parts], dtype=torch.float64)
        counts = torch.bincount(
            torch.multinomial(areas / areas.sum(), n, replacement=True, generator=g),
            minlength=len(self.parts),
        )
        pts, nrms = [], []
        for part, k in zip(self.parts, counts.tolist()):
            if k:
                p, q = part.sample(k, g)
                pts.append(p)
                nrms.append(q)
        p, q = torch.cat(pts), torch.cat(nrms)
        perm = torch.randperm(n, generator=g)
        return ((p - self.center) * self.scale)[perm], q[perm]


def random_assembly(g: torch.Generator, *, parts: tuple[int, int] = (3, 5)) -> Assembly:
    """A random asymmetric assembly of ``parts[0]..parts[1]`` primitives, diameter about 2."""
    lo, hi = parts
    if not (isinstance(lo, int) and isinstance(hi, int) and 1 <= lo <= hi):
        raise ValueError(f"parts must be (lo, hi) with 1 <= lo <= hi, got {parts!r}")
    k = lo + int(torch.randint(hi - lo + 1, (1,), generator=g))
    so3 = SO3()
    prims = []
    for _ in range(k):
        kind = _KINDS[int(torch.randint(len(_KINDS), (1,), generator=g))]
        u = _rand(g, 3)
        if kind == "ellipsoid":
            size = tuple((0.2 + 0.45 * u).tolist())
        elif kind == "box":
            size = tuple((0.15 + 0.35 * u).tolist())
        elif kind == "cylinder":
            size = (0.1 + 0.25 * float(u[0]), 0.2 + 0.3 * float(u[1]))
        else:
            size = (0.25 + 0.2 * float(u[0]), 0.06 + 0.09 * float(u[1]))
        R = so3.sample(g).to(torch.float64)
        offset = 0.45 * torch.randn(3, generator=g, dtype=torch.float64)
        prims.append(Primitive(kind, size, R, offset))
    asm = Assembly(prims)
    dense, _ = asm.sample(4096, g)
    center = dense.mean(0)
    radius = float((dense - center).norm(dim=-1).max())
    return Assembly(prims, center, 1.0 / radius)


class _MeshSurface:
    """A triangle mesh as a surface to sample fragments from (area-uniform, face normals)."""

    def __init__(self, vertices: Tensor, faces: Tensor) -> None:
        self.vertices, self.faces = vertices, faces

    def sample(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        seed = int(torch.randint(2**31 - 1, (1,), generator=g))
        return sample_mesh(self.vertices, self.faces, n, seed=seed, normalize=True)


@dataclass
class RegistrationPair:
    """A source/target pair: ``tgt ≈ src @ R.T + t`` on the overlap."""

    src: Tensor
    tgt: Tensor
    src_normals: Tensor
    tgt_normals: Tensor
    R: Tensor
    t: Tensor
    overlap: float
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "src": self.src,
            "tgt": self.tgt,
            "src_normals": self.src_normals,
            "tgt_normals": self.tgt_normals,
            "R": self.R,
            "t": self.t,
            "overlap": torch.tensor(self.overlap, dtype=self.src.dtype),
        }


def _crop(surface, n: int, d: Tensor, lo: float | None, hi: float | None, g) -> tuple:
    """``n`` samples of ``surface`` with ``lo <= x . d <= hi`` (rounds of fresh samples)."""
    pts, nrms, got = [], [], 0
    for _ in range(50):
        p, q = surface.sample(max(2 * n, 64), g)
        s = p @ d
        keep = torch.ones_like(s, dtype=torch.bool)
        if lo is not None:
            keep &= s >= lo
        if hi is not None:
            keep &= s <= hi
        pts.append(p[keep])
        nrms.append(q[keep])
        got += int(keep.sum())
        if got >= n:
            break
    if got < n:
        raise ValueError(
            f"the crop keeps too little of the surface ({got} of {n} points after 50 rounds): "
            f"zero-area crop; use a larger keep fraction"
        )
    return torch.cat(pts)[:n], torch.cat(nrms)[:n]


def _quantile(sorted_values: Tensor, f: float) -> float:
    n = len(sorted_values)
    return float(sorted_values[min(n - 1, max(0, int(f * n)))])


def _overlap(a: Tensor, b: Tensor, tau: float) -> float:
    d = torch.cdist(a, b).min(dim=1).values
    return float((d < tau).to(torch.float64).mean())


def _rotation(kind: str, g: torch.Generator) -> Tensor:
    if kind == "so3":
        return SO3().sample(g).to(torch.float64)
    if kind == "z":
        a = 2 * math.pi * float(_rand(g, 1))
        c, s = math.cos(a), math.sin(a)
        return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64)


def make_pair(
    seed: int,
    *,
    n_points: int = 1024,
    split: str = "normal",
    rotation: str = "so3",
    noise: float = 0.005,
    translation_std: float = 1.0,
    tau: float = 0.05,
    source: str = "assembly",
    dtype: torch.dtype = torch.float32,
) -> RegistrationPair:
    """One seeded registration pair (see the module docstring).

    Args:
        seed: the pair's seed (same seed, same pair).
        n_points: points per fragment (>= 16).
        split: ``"full"``, ``"normal"`` (overlap > 0.3) or ``"low"`` (0.1-0.3).
        rotation: ``"so3"``, ``"z"`` or ``"none"``.
        noise: Gaussian point noise (std, diameter-2 units).
        translation_std: std of each cloud's random translation.
        tau: distance under which a source point counts as overlapping.
        source: ``"assembly"`` (procedural) or a mesh shipped in the pyvista wheel
            (``airplane``, ``ant``, ``nut``, ``sphere``; needs ``invariance-geometry[meshes]``).
        dtype: dtype of the returned tensors.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if not isinstance(n_points, int) or isinstance(n_points, bool) or n_points < 16:
        raise ValueError(f"n_points must be an int >= 16, got {n_points!r}")
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if rotation not in ("so3", "z", "none"):
        raise ValueError(f"rotation must be 'so3', 'z' or 'none', got {rotation!r}")
    for name, v in (("noise", noise), ("translation_std", translation_std)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    if source == "assembly":
        surface: Any = random_assembly(g)
    elif source in PYVISTA_MESHES:
        surface = _MeshSurface(*load_pyvista_mesh(source))
    else:
        raise ValueError(f"source must be 'assembly' or one of {PYVISTA_MESHES}, got {source!r}")
    want = {"full": (0.0, 1.01), "normal": (0.3, 1.01), "low": (0.1, 0.3)}[split]
    for _attempt in range(40):
        d = _unit(torch.randn(3, generator=g, dtype=torch.float64))
        if split == "full":
            lo_a = hi_b = None
        else:
            # the kept regions are x.d >= lo_a (A) and x.d <= hi_b (B); the band between them
            # is the overlap. Widths in units of the surface's extent along d.
            probe, _ = surface.sample(2048, g)
            s = (probe @ d).sort().values
            if split == "normal":
                band = 0.35 + 0.3 * float(_rand(g, 1))
            else:
                band = 0.12 + 0.1 * float(_rand(g, 1))
            mid = 0.35 + 0.3 * float(_rand(g, 1))
            lo_a, hi_b = _quantile(s, mid - band / 2), _quantile(s, mid + band / 2)
        a, na = _crop(surface, n_points, d, lo_a, None, g)
        b, nb = _crop(surface, n_points, d, None, hi_b, g)
        ov = 1.0 if hi_b is None else float(((a @ d) <= hi_b).to(torch.float64).mean())
        if want[0] <= ov <= want[1]:
            break
    else:
        raise RuntimeError(f"no crop with overlap in {want} after 40 attempts (seed {seed})")
    overlap_nn = _overlap(a, b, tau)
    if noise:
        a = a + noise * torch.randn(a.shape, generator=g, dtype=torch.float64)
        b = b + noise * torch.randn(b.shape, generator=g, dtype=torch.float64)
    Rs, Rt = _rotation(rotation, g), _rotation(rotation, g)
    ts = translation_std * torch.randn(3, generator=g, dtype=torch.float64)
    tt = translation_std * torch.randn(3, generator=g, dtype=torch.float64)
    src, src_n = a @ Rs.T + ts, na @ Rs.T
    tgt, tgt_n = b @ Rt.T + tt, nb @ Rt.T
    R = Rt @ Rs.T
    t = tt - ts @ R.T
    return RegistrationPair(
        src.to(dtype),
        tgt.to(dtype),
        src_n.to(dtype),
        tgt_n.to(dtype),
        R.to(dtype),
        t.to(dtype),
        ov,
        {
            "seed": seed,
            "split": split,
            "rotation": rotation,
            "source": source,
            "overlap_nn": overlap_nn,
        },
    )


class RegistrationPairs(Dataset):
    """``n`` seeded pairs (``make_pair(seed * 1_000_003 + i, **kwargs)``), made on first access
    and kept; items are :meth:`RegistrationPair.as_dict` dicts."""

    def __init__(self, n: int, *, seed: int = 0, **kwargs: Any) -> None:
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        make_pair(seed * 1_000_003, **kwargs)  # validates kwargs early (cached below)
        self.n, self.seed, self.kwargs = n, seed, kwargs
        self._cache: dict[int, RegistrationPair] = {}

    def __len__(self) -> int:
        return self.n

    def pair(self, i: int) -> RegistrationPair:
        if not 0 <= i < self.n:
            raise IndexError(f"pair index {i} out of range for {self.n} pairs")
        if i not in self._cache:
            self._cache[i] = make_pair(self.seed * 1_000_003 + i, **self.kwargs)
        return self._cache[i]

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.pair(i).as_dict()
