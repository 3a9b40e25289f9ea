r"""Group samplers and group actions.

Convention (stated once for the whole project): points and vectors are **row vectors**. A rotation
``R`` and translation ``t`` act on a point set ``X`` of shape ``(..., N, d)`` as

.. math:: g \cdot X = X R^\top + t .

Every sampler takes a ``torch.Generator`` (or ``None`` for a fresh, unseeded one is *not* used:
``None`` means "the default generator", which the caller is responsible for seeding). Samplers
return float64 by default, because symmetry checks are done in float64.

Two layers are importable from here:

* plain functions (``haar_so3``, ``rand_permutation``, ``d4_act``, ...), usable anywhere (defined
  in :mod:`invariance.core.samplers`);
* small :class:`Group` objects (``SO3()``, ``Permutation()``, ``D4()``, ...) that bundle a sampler
  with named *representations* (``"vector"``, ``"points"``, ``"nodes"``, ``"image"``, ``"seq"``,
  ...). The checkers in :mod:`invariance.core.testing` drive these objects, and a new symmetry
  plugs in by writing another small class (or by passing a callable ``(g, x) -> x`` wherever a
  representation is expected).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from invariance.core.samplers import (
    C4_ELEMENTS,
    D4_ELEMENTS,
    cyclic_shift,
    d4_act,
    delay,
    haar_o3,
    haar_orthogonal,
    haar_so2,
    haar_so3,
    invert_permutation,
    permute_graph,
    permute_nodes,
    rand_gl_plus,
    rand_log_uniform,
    rand_permutation,
    rand_rigid,
    rand_sl,
    relabel_edge_index,
)

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
