r"""Group samplers and plain group actions (functions), float64 by default; the :class:`Group`
objects of :mod:`invariance.core.groups` are built on them and re-export every name here.

Convention: points and vectors are **row vectors**; a rotation ``R`` and translation ``t`` act on a
point set ``X`` of shape ``(..., N, d)`` as ``X R^T + t``. Every sampler takes a
``torch.Generator`` (``None`` means the default generator, which the caller seeds).
"""

from __future__ import annotations

import math

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
]

_F64 = torch.float64


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
