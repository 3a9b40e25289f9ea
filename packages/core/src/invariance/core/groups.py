r"""Group samplers and group actions.

Convention (stated once for the whole project): points and vectors are **row vectors**. A rotation
``R`` and translation ``t`` act on a point set ``X`` of shape ``(..., N, d)`` as

.. math:: g \cdot X = X R^\top + t .

Every sampler takes a ``torch.Generator`` (or ``None`` for a fresh, unseeded one is *not* used:
``None`` means "the default generator", which the caller is responsible for seeding). Samplers
return float64 by default, because symmetry checks are done in float64.

Two layers live here:

* plain functions (``haar_so3``, ``rand_permutation``, ``d4_act``, ...), usable anywhere;
* small :class:`Group` objects (``SO3()``, ``Permutation()``, ``D4()``, ...) that bundle a sampler
  with named *representations* (``"vector"``, ``"points"``, ``"nodes"``, ``"image"``, ``"seq"``,
  ...). The checkers in :mod:`invariance.core.testing` drive these objects, and a new symmetry
  plugs in by writing another small class (or by passing a callable ``(g, x) -> x`` wherever a
  representation is expected).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "haar_so2",
    "haar_so3",
    "haar_o3",
    "haar_orthogonal",
    "rand_rigid",
    "rand_permutation",
    "invert_permutation",
    "permute_nodes",
    "relabel_edge_index",
    "permute_graph",
    "d4_act",
    "D4_ELEMENTS",
    "C4_ELEMENTS",
    "cyclic_shift",
    "delay",
    "rand_log_uniform",
    "rand_gl_plus",
    "rand_sl",
    "Group",
    "SO2",
    "SO3",
    "O3",
    "E3",
    "SE3",
    "Permutation",
    "C4",
    "D4",
    "CyclicShift",
    "Delay",
    "Scaling",
    "PositiveAffine",
    "GLPlus",
    "SL",
    "Product",
    "apply_rep",
]

_F64 = torch.float64


# --------------------------------------------------------------------------- samplers


def haar_orthogonal(
    d: int,
    n: int | None = None,
    *,
    proper: bool = True,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = _F64,
    device: torch.device | str | None = None,
) -> Tensor:
    """Haar-uniform orthogonal matrices from the QR decomposition of a Gaussian matrix.

    The signs of ``diag(R)`` are moved into ``Q`` (Mezzadri 2007), which makes ``Q`` Haar on O(d).
    With ``proper=True`` the first column is negated where ``det Q = -1``; right-multiplying by a
    fixed reflection preserves the Haar measure, so the result is Haar on SO(d).

    Returns ``(d, d)`` when ``n is None`` else ``(n, d, d)``.
    """
    if d < 1:
        raise ValueError(f"dimension must be >= 1, got d={d}")
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1 or None, got n={n}")
    m = 1 if n is None else n
    a = torch.randn(m, d, d, generator=generator, dtype=_F64, device=_gen_device(generator, device))
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1)).unsqueeze(-2)
    if proper:
        neg = torch.linalg.det(q) < 0
        q[neg, :, 0] = -q[neg, :, 0]
    q = q.to(dtype=dtype, device=device if device is not None else q.device)
    return q[0] if n is None else q


def _gen_device(generator: torch.Generator | None, device) -> torch.device:
    if generator is not None:
        return generator.device
    return torch.device(device) if device is not None else torch.device("cpu")


def haar_so2(n: int | None = None, *, generator=None, dtype=_F64, device=None) -> Tensor:
    """Uniform rotations of the plane, ``(2, 2)`` or ``(n, 2, 2)``."""
    m = 1 if n is None else n
    theta = torch.rand(m, generator=generator, dtype=_F64, device=_gen_device(generator, device))
    theta = theta * 2 * math.pi
    c, s = torch.cos(theta), torch.sin(theta)
    r = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    r = r.to(dtype=dtype, device=device if device is not None else r.device)
    return r[0] if n is None else r


def haar_so3(n: int | None = None, *, generator=None, dtype=_F64, device=None) -> Tensor:
    """Haar-uniform rotations in 3-D (det = +1), ``(3, 3)`` or ``(n, 3, 3)``."""
    return haar_orthogonal(3, n, proper=True, generator=generator, dtype=dtype, device=device)


def haar_o3(n: int | None = None, *, generator=None, dtype=_F64, device=None) -> Tensor:
    """Haar-uniform elements of O(3): rotations and rotoreflections, each with probability 1/2."""
    return haar_orthogonal(3, n, proper=False, generator=generator, dtype=dtype, device=device)


def rand_rigid(
    dim: int = 3,
    *,
    proper: bool = True,
    scale: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = _F64,
    device=None,
) -> tuple[Tensor, Tensor]:
    """A random rigid motion ``(R, t)``: Haar ``R`` in SO(dim) (O(dim) if ``proper=False``) and
    ``t ~ N(0, scale^2 I)``. Acts as ``X @ R.T + t``."""
    r = haar_orthogonal(dim, proper=proper, generator=generator, dtype=dtype, device=device)
    t = scale * torch.randn(
        dim, generator=generator, dtype=_F64, device=_gen_device(generator, device)
    )
    return r, t.to(dtype=dtype, device=r.device)


def rand_permutation(n: int, *, generator: torch.Generator | None = None, device=None) -> Tensor:
    """A uniform random permutation of ``range(n)`` (LongTensor ``(n,)``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    p = torch.randperm(n, generator=generator, device=_gen_device(generator, device))
    return p.to(device) if device is not None else p


def invert_permutation(perm: Tensor) -> Tensor:
    """``inv`` with ``inv[perm[i]] = i``."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device)
    return inv


def permute_nodes(x: Tensor, perm: Tensor, dim: int = 0) -> Tensor:
    """Reorder nodes: new node ``i`` is old node ``perm[i]`` (``x.index_select(dim, perm)``)."""
    if x.shape[dim] != perm.numel():
        raise ValueError(
            f"permutation of length {perm.numel()} does not match size {x.shape[dim]} of dim {dim} "
            f"of a tensor with shape {tuple(x.shape)}"
        )
    return x.index_select(dim, perm.to(x.device))


def relabel_edge_index(edge_index: Tensor, perm: Tensor) -> Tensor:
    """Relabel an ``edge_index`` (2, E) so that it refers to nodes reordered by ``perm``
    (see :func:`permute_nodes`): old label ``j`` becomes ``inv[j]``."""
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
    return invert_permutation(perm.to(edge_index.device))[edge_index]


def permute_graph(x: Tensor, edge_index: Tensor, perm: Tensor) -> tuple[Tensor, Tensor]:
    """Permute node features and relabel ``edge_index`` consistently."""
    return permute_nodes(x, perm, 0), relabel_edge_index(edge_index, perm)


D4_ELEMENTS: tuple[tuple[int, bool], ...] = tuple((k, f) for f in (False, True) for k in range(4))
C4_ELEMENTS: tuple[tuple[int, bool], ...] = tuple((k, False) for k in range(4))


def d4_act(x: Tensor, k: int, flip: bool = False) -> Tensor:
    """Exact action of the dihedral group D4 on the last two (spatial) dims: optional flip along the
    last dim, then ``rot90`` by ``k`` quarter turns (counter-clockwise in (row, col) display)."""
    if x.dim() < 2:
        raise ValueError(f"d4_act needs a tensor with >= 2 dims, got shape {tuple(x.shape)}")
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, int(k) % 4, dims=(-2, -1))


def cyclic_shift(x: Tensor, s: int, dim: int = -1) -> Tensor:
    """Cyclic shift by ``s`` along ``dim`` (``torch.roll``)."""
    return torch.roll(x, shifts=int(s), dims=dim)


def delay(x: Tensor, s: int, dim: int = -1) -> Tensor:
    """Delay by ``s >= 0`` steps along ``dim``: zeros enter at the front and the tail is dropped.

    A causal, time-invariant system with zero initial state commutes exactly with this action."""
    s = int(s)
    if s < 0:
        raise ValueError(f"delay must be >= 0, got {s}")
    n = x.shape[dim]
    if s == 0:
        return x
    if s >= n:
        return torch.zeros_like(x)
    head = torch.zeros_like(x.narrow(dim, 0, s))
    return torch.cat([head, x.narrow(dim, 0, n - s)], dim=dim)


def rand_log_uniform(
    low: float, high: float, *, generator: torch.Generator | None = None, dtype=_F64
) -> Tensor:
    """A positive scalar, log-uniform in ``[low, high]``."""
    if not 0 < low <= high:
        raise ValueError(f"need 0 < low <= high, got low={low}, high={high}")
    u = torch.rand((), generator=generator, dtype=_F64)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).to(dtype)


def rand_gl_plus(
    n: int, *, cond_max: float = 10.0, generator: torch.Generator | None = None, dtype=_F64
) -> Tensor:
    """A random matrix with positive determinant, ``U diag(s) V^T`` with Haar ``U, V`` in SO(n) and
    singular values log-uniform in ``[cond_max^-1/2, cond_max^1/2]`` (condition number
    <= cond_max)."""
    u = haar_orthogonal(n, generator=generator)
    v = haar_orthogonal(n, generator=generator)
    half = math.sqrt(cond_max)
    s = torch.stack([rand_log_uniform(1 / half, half, generator=generator) for _ in range(n)])
    return ((u * s) @ v.T).to(dtype)


def rand_sl(
    n: int, *, cond_max: float = 10.0, generator: torch.Generator | None = None, dtype=_F64
) -> Tensor:
    """A random matrix with determinant exactly 1 (up to rounding): a GL+ sample divided by
    ``det^(1/n)``."""
    a = rand_gl_plus(n, cond_max=cond_max, generator=generator, dtype=_F64)
    return (a / torch.linalg.det(a) ** (1.0 / n)).to(dtype)


# --------------------------------------------------------------------------- group objects

Rep = str | Callable[[Any, Tensor], Tensor] | None


def _fmt(t: Tensor) -> str:
    return str([[round(float(v), 4) for v in row] for row in t.reshape(t.shape[0], -1)])


def _matvec(x: Tensor, r: Tensor, what: str) -> Tensor:
    if x.shape[-1] != r.shape[-1]:
        raise ValueError(
            f"{what}: expected the last dim of the input to be {r.shape[-1]}, "
            f"got shape {tuple(x.shape)}"
        )
    return x @ r.to(dtype=x.dtype, device=x.device).transpose(-1, -2)


class Group(abc.ABC):
    """A group with a sampler and named representations.

    Subclasses implement :meth:`sample` and :meth:`_act`; :meth:`act` also accepts ``None`` (trivial
    representation) and callables ``(g, x) -> x``.
    """

    name: str = "group"
    reps: tuple[str, ...] = ()

    @abc.abstractmethod
    def sample(self, generator: torch.Generator, inputs: Sequence[Tensor] = ()) -> Any:
        """Draw one group element (``inputs`` lets a group infer sizes, e.g. ``n`` of S_n)."""

    def _act(self, rep: str, g: Any, x: Tensor) -> Tensor:
        """Apply ``g`` in the named representation ``rep`` (validated by :meth:`act`)."""
        raise ValueError(f"{self.name} cannot act in representation {rep!r}")

    def act(self, rep: Rep, g: Any, x: Any) -> Any:
        """Apply the group element ``g`` to ``x`` in representation ``rep``."""
        if rep is None or rep == "invariant":
            return x
        if callable(rep):
            return rep(g, x)
        if rep not in self.reps:
            raise ValueError(
                f"{self.name} has no representation {rep!r}; known: {', '.join(self.reps)}"
            )
        if not isinstance(x, Tensor):
            raise TypeError(f"{self.name}.act({rep!r}) expects a Tensor, got {type(x).__name__}")
        return self._act(rep, g, x)

    def describe(self, g: Any) -> str:
        return f"{self.name} element {g!r}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _Linear(Group):
    """Groups of matrices acting on the last dim (``x @ g.T``)."""

    reps = ("vector", "points")
    dim = 3

    def _act(self, rep, g, x):
        return _matvec(x, g, f"{self.name} {rep!r}")

    def describe(self, g):
        return f"{self.name} matrix {_fmt(g)} (det {float(torch.linalg.det(g)):+.3f})"


class SO2(_Linear):
    """Rotations of the plane (Haar)."""

    name, dim = "SO(2)", 2

    def sample(self, generator, inputs=()):
        return haar_so2(generator=generator)


class SO3(_Linear):
    """Rotations of space (Haar). ``"points"`` and ``"vector"`` both mean ``x @ R.T``."""

    name = "SO(3)"

    def sample(self, generator, inputs=()):
        return haar_so3(generator=generator)


class O3(_Linear):
    """Rotations and reflections of space (Haar on O(3))."""

    name = "O(3)"

    def sample(self, generator, inputs=()):
        return haar_o3(generator=generator)


class E3(Group):
    """Rigid motions with reflections, ``X @ R.T + t``; ``"vector"`` ignores ``t``."""

    name, reps, proper = "E(3)", ("points", "vector"), False

    def __init__(self, *, scale: float = 1.0) -> None:
        self.scale = scale

    def sample(self, generator, inputs=()):
        return rand_rigid(3, proper=self.proper, scale=self.scale, generator=generator)

    def _act(self, rep, g, x):
        r, t = g
        y = _matvec(x, r, f"{self.name} {rep!r}")
        return y + t.to(dtype=x.dtype, device=x.device) if rep == "points" else y

    def describe(self, g):
        r, t = g
        return f"{self.name} R={_fmt(r)} (det {float(torch.linalg.det(r)):+.0f}) t={_fmt(t[None])}"


class SE3(E3):
    """Proper rigid motions, ``X @ R.T + t`` with ``R`` in SO(3)."""

    name, proper = "SE(3)", True


class Permutation(Group):
    """Permutations of ``n`` items along ``dim`` (``n`` inferred from the first tensor input).

    Representations: ``"nodes"`` reorders along ``dim`` (new item ``i`` = old item ``perm[i]``),
    ``"edge_index"`` relabels a ``(2, E)`` index tensor accordingly.
    """

    name, reps = "S_n", ("nodes", "edge_index")

    def __init__(self, dim: int = 0, n: int | None = None) -> None:
        self.dim, self.n = dim, n

    def sample(self, generator, inputs=()):
        n = self.n
        if n is None:
            tensors = [t for t in inputs if isinstance(t, Tensor) and t.dim() > 0]
            if not tensors:
                raise ValueError("Permutation(n=None) needs a tensor input to infer n from")
            n = tensors[0].shape[self.dim]
        return rand_permutation(n, generator=generator)

    def _act(self, rep, g, x):
        if rep == "nodes":
            return permute_nodes(x, g, self.dim)
        return relabel_edge_index(x, g)

    def describe(self, g):
        s = g.tolist()
        return f"permutation {s if len(s) <= 16 else str(s[:16])[:-1] + ', ...]'}"

    def __repr__(self):
        return f"Permutation(dim={self.dim}, n={self.n})"


class C4(Group):
    """Quarter-turn rotations of an image grid (exact, on the last two dims)."""

    name, reps, elements = "C4", ("image",), C4_ELEMENTS

    def sample(self, generator, inputs=()):
        # never the identity, so one trial is informative
        i = int(torch.randint(1, len(self.elements), (), generator=generator))
        return self.elements[i]

    def _act(self, rep, g, x):
        return d4_act(x, *g)

    def describe(self, g):
        return f"{self.name} element rot90^{g[0]}{' after a flip' if g[1] else ''}"


class D4(C4):
    """The 8 symmetries of the square (rotations and flips), exact on pixel grids."""

    name, elements = "D4", D4_ELEMENTS


class CyclicShift(Group):
    """Cyclic shifts along ``dim``: ``"seq"`` rolls by ``s``."""

    name, reps = "Z_n", ("seq",)

    def __init__(self, dim: int = -1, max_shift: int | None = None) -> None:
        self.dim, self.max_shift = dim, max_shift

    def _length(self, inputs):
        tensors = [t for t in inputs if isinstance(t, Tensor) and t.dim() > 0]
        if not tensors:
            raise ValueError(f"{type(self).__name__} needs a tensor input to infer its length")
        return tensors[0].shape[self.dim]

    def sample(self, generator, inputs=()):
        hi = self.max_shift if self.max_shift is not None else self._length(inputs) - 1
        return int(torch.randint(1, max(hi, 1) + 1, (), generator=generator))

    def _act(self, rep, g, x):
        return cyclic_shift(x, g, self.dim)

    def describe(self, g):
        return f"{self.name} shift by {g}"

    def __repr__(self):
        return f"{type(self).__name__}(dim={self.dim}, max_shift={self.max_shift})"


class Delay(CyclicShift):
    """Delays along ``dim`` with zero fill (the symmetry of causal time-invariant systems)."""

    name = "delay"

    def sample(self, generator, inputs=()):
        hi = self.max_shift if self.max_shift is not None else max(self._length(inputs) // 2, 1)
        return int(torch.randint(1, hi + 1, (), generator=generator))

    def _act(self, rep, g, x):
        return delay(x, g, self.dim)


class Scaling(Group):
    """Positive rescalings ``x -> c x`` with ``c`` log-uniform in ``[low, high]``."""

    name, reps = "R+", ("scale",)

    def __init__(self, low: float = 0.1, high: float = 10.0) -> None:
        self.low, self.high = low, high

    def sample(self, generator, inputs=()):
        return float(rand_log_uniform(self.low, self.high, generator=generator))

    def _act(self, rep, g, x):
        return x * g

    def describe(self, g):
        return f"scaling by {g:.4g}"


class PositiveAffine(Group):
    """``x -> a x + b`` with ``a > 0`` log-uniform in ``[low, high]`` and ``b ~ N(0, shift^2)``."""

    name, reps = "Aff+", ("affine", "scale")

    def __init__(self, low: float = 0.1, high: float = 10.0, shift: float = 3.0) -> None:
        self.low, self.high, self.shift = low, high, shift

    def sample(self, generator, inputs=()):
        a = float(rand_log_uniform(self.low, self.high, generator=generator))
        b = float(self.shift * torch.randn((), generator=generator, dtype=_F64))
        return a, b

    def _act(self, rep, g, x):
        a, b = g
        return a * x + b if rep == "affine" else a * x

    def describe(self, g):
        return f"affine map x -> {g[0]:.4g} x + {g[1]:.4g}"


class GLPlus(_Linear):
    """Invertible matrices with positive determinant acting on the last dim."""

    name = "GL+(n)"

    def __init__(self, n: int = 3, cond_max: float = 10.0) -> None:
        self.dim, self.cond_max = n, cond_max

    def sample(self, generator, inputs=()):
        return rand_gl_plus(self.dim, cond_max=self.cond_max, generator=generator)

    def __repr__(self):
        return f"{type(self).__name__}({self.dim})"


class SL(GLPlus):
    """Matrices with unit determinant acting on the last dim."""

    name = "SL(n)"

    def sample(self, generator, inputs=()):
        return rand_sl(self.dim, cond_max=self.cond_max, generator=generator)


class Product(Group):
    """Direct product; a representation is a tuple with one entry (name, callable or None) per
    factor, applied factor by factor from left to right."""

    def __init__(self, *groups: Group) -> None:
        if not groups:
            raise ValueError("Product needs at least one group")
        self.groups = groups
        self.name = " x ".join(g.name for g in groups)

    def sample(self, generator, inputs=()):
        return tuple(g.sample(generator, inputs) for g in self.groups)

    def act(self, rep, g, x):
        if rep is None or rep == "invariant":
            return x
        if callable(rep):
            return rep(g, x)
        if not isinstance(rep, tuple) or len(rep) != len(self.groups):
            raise ValueError(
                f"{self.name}: a representation must be a tuple of {len(self.groups)} entries, "
                f"got {rep!r}"
            )
        for grp, r, gi in zip(self.groups, rep, g):
            x = grp.act(r, gi, x)
        return x

    def describe(self, g):
        return "; ".join(grp.describe(gi) for grp, gi in zip(self.groups, g))

    def __repr__(self):
        return f"Product({', '.join(map(repr, self.groups))})"


def apply_rep(group: Group, rep: Rep, g: Any, x: Any) -> Any:
    """Functional form of ``group.act(rep, g, x)``."""
    return group.act(rep, g, x)
