"""Neighbour search and sampling on point clouds, in pure torch.

PyG 2.8's ``torch_geometric.nn.knn``/``fps``/``radius`` need the compiled ``pyg-lib`` (or
``torch-cluster``), which is not installable offline here (``torch_geometric.typing.WITH_KNN`` is
``False`` after a plain ``pip install torch-geometric``). These are dense ``torch.cdist`` + ``topk``
versions: O(B·M·N) memory, fine for the few-thousand-point clouds of this package. For large
offline preprocessing use ``scipy.spatial.cKDTree`` (our kNN indices equal cKDTree's, see
``tests/test_ops_neighbors.py``).

Conventions: points are rows, ``(N, 3)`` or batched ``(B, N, 3)``; indices are ``int64``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from ._checks import check_points

__all__ = ["index_points", "knn", "ball_query", "farthest_point_sample"]


def index_points(x: Tensor, idx: Tensor) -> Tensor:
    """Gather rows: ``x`` (B, N, C), ``idx`` (B, *S) -> (B, *S, C)."""
    if x.dim() != 3:
        raise ValueError(f"index_points expects x of shape (B, N, C), got {tuple(x.shape)}")
    if idx.shape[0] != x.shape[0]:
        raise ValueError(f"batch mismatch: x {tuple(x.shape)} vs idx {tuple(idx.shape)}")
    B = x.shape[0]
    flat = idx.reshape(B, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def _batched(x: Tensor) -> tuple[Tensor, bool]:
    return (x, False) if x.dim() == 3 else (x.unsqueeze(0), True)


def knn(
    x: Tensor,
    k: int,
    query: Tensor | None = None,
    *,
    exclude_self: bool = False,
) -> tuple[Tensor, Tensor]:
    """k nearest neighbours of each query point among ``x``, sorted by distance.

    Args:
        x (Tensor): reference points, (N, D) or (B, N, D).
        k (int): number of neighbours.
        query (Tensor, optional): query points (M, D) or (B, M, D); defaults to ``x``.
        exclude_self (bool): drop the query itself (only when ``query`` is ``None``): asks for
            k+1 neighbours and removes each point's own index (default: ``False``).

    Returns:
        ``(idx, dist)``: (…, M, k) int64 indices into ``x`` and Euclidean distances, ascending.
        Ties (duplicate points) are broken by index, so duplicates are allowed.

    Raises:
        ValueError: k < 1, k larger than the number of available points, NaN input, shape mismatch.
    """
    check_points(x, "x", dim=None)
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    q = x if query is None else check_points(query, "query", dim=x.shape[-1])
    if query is not None and query.dim() != x.dim():
        raise ValueError(
            f"query {tuple(query.shape)} and x {tuple(x.shape)} must have the same rank"
        )
    n_avail = x.shape[-2] - (1 if (exclude_self and query is None) else 0)
    if k > n_avail:
        raise ValueError(
            f"k={k} exceeds the {n_avail} available points (x has shape {tuple(x.shape)}"
            f"{', self excluded' if exclude_self and query is None else ''})"
        )
    xb, squeeze = _batched(x)
    qb, _ = _batched(q)
    d = torch.cdist(qb, xb)  # (B, M, N)
    if exclude_self and query is None:
        eye = torch.eye(xb.shape[1], dtype=torch.bool, device=x.device)
        d = d.masked_fill(eye, float("inf"))
    # stable tie-break by index: sort is stable, topk is not
    dist, idx = torch.sort(d, dim=-1, stable=True)
    dist, idx = dist[..., :k], idx[..., :k]
    if squeeze:
        dist, idx = dist[0], idx[0]
    return idx, dist


def ball_query(x: Tensor, query: Tensor, radius: float, k: int) -> tuple[Tensor, Tensor]:
    """Up to ``k`` neighbours within ``radius`` of each query, nearest first.

    Slots beyond the number of points inside the ball are padded with the nearest neighbour's
    index (the PointNet++ convention), and ``mask`` marks the real ones. If no point lies within
    the ball, the single nearest point is returned in every slot with ``mask`` False.

    Args:
        x (Tensor): (N, 3) or (B, N, 3). query (Tensor): (M, 3) or (B, M, 3).
        radius (float): ball radius (> 0). k (int): max neighbours (<= N).

    Returns:
        ``(idx, mask)``, both (…, M, k).
    """
    if not radius > 0:
        raise ValueError(f"radius must be > 0, got {radius}")
    idx, dist = knn(x, k, query)
    inside = dist <= radius
    first = idx[..., :1].expand_as(idx)
    idx = torch.where(inside, idx, first)
    return idx, inside


def farthest_point_sample(
    x: Tensor,
    n: int,
    *,
    start: int | Literal["farthest_from_centroid"] = "farthest_from_centroid",
) -> Tensor:
    """Farthest point sampling (a sequential loop over ``n``; vectorised over the batch).

    Args:
        x (Tensor): (N, 3) or (B, N, 3).
        n (int): number of samples, 1 <= n <= N.
        start: index of the first sample, or ``"farthest_from_centroid"`` (default), a
            rotation-, translation- and permutation-invariant rule (the official RISurConv/
            pointops kernels start at index 0, which is not permutation invariant).

    Returns:
        (…, n) int64 indices. Duplicate points are fine: once every distinct point is taken
        the remaining picks repeat an already chosen index.
    """
    check_points(x, "x", dim=None)
    N = x.shape[-2]
    if not isinstance(n, int) or not 1 <= n <= N:
        raise ValueError(f"n must be an int in [1, {N}] for x of shape {tuple(x.shape)}, got {n!r}")
    xb, squeeze = _batched(x)
    B = xb.shape[0]
    if start == "farthest_from_centroid":
        c = xb.mean(dim=1, keepdim=True)
        cur = ((xb - c) ** 2).sum(-1).argmax(dim=1)
    elif isinstance(start, int) and 0 <= start < N:
        cur = torch.full((B,), start, dtype=torch.long, device=x.device)
    else:
        raise ValueError(
            f"start must be an index in [0, {N}) or 'farthest_from_centroid', got {start!r}"
        )
    out = torch.empty(B, n, dtype=torch.long, device=x.device)
    best = torch.full((B, N), float("inf"), dtype=xb.dtype, device=x.device)
    ar = torch.arange(B, device=x.device)
    for i in range(n):
        out[:, i] = cur
        d = ((xb - xb[ar, cur].unsqueeze(1)) ** 2).sum(-1)
        best = torch.minimum(best, d)
        cur = best.argmax(dim=1)
    return out[0] if squeeze else out
