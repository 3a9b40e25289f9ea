"""Neighbour search and sampling on point clouds, in pure torch (plus scipy's cKDTree on CPU).

PyG 2.8's ``torch_geometric.nn.knn``/``fps``/``radius`` need the compiled ``pyg-lib`` (or
``torch-cluster``), which is not installable offline here (``torch_geometric.typing.WITH_KNN`` is
``False`` after a plain ``pip install torch-geometric``). :func:`knn` has two exact paths:

* ``"brute"``: distances from coordinate differences (``torch.cdist`` with
  ``compute_mode="donot_use_mm_for_euclid_dist"``; the default matrix-multiply ``cdist`` loses
  ~1e-3 to cancellation in float32 and gives non-zero self-distances), queries in chunks of
  bounded memory, ``topk`` instead of a full sort; any device, differentiable distances;
* ``"tree"``: ``scipy.spatial.cKDTree`` per cloud (CPU), then the distances of the chosen
  neighbours recomputed exactly in torch (so they keep the input dtype and autograd).

``"auto"`` takes the tree on CPU for clouds of at least ``TREE_MIN_POINTS`` points, else brute
force. Both give the indices of cKDTree (tested) with ties broken by index on the brute path.

Conventions: points are rows, ``(N, 3)`` or batched ``(B, N, 3)``; indices are ``int64``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

from ._checks import check_int, check_points, check_real, check_tensor

__all__ = ["index_points", "knn", "ball_query", "farthest_point_sample", "TREE_MIN_POINTS"]

#: ``knn(method="auto")`` uses cKDTree on CPU from this many reference points on
TREE_MIN_POINTS = 256
#: brute force works on query chunks of at most this many query-point pairs
_CHUNK_PAIRS = 1 << 22


def index_points(x: Tensor, idx: Tensor) -> Tensor:
    """Gather rows: ``x`` (B, N, C), ``idx`` (B, *S) -> (B, *S, C)."""
    check_tensor(x, "x", ndim=3)
    if not isinstance(idx, Tensor) or idx.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"idx must be an integer tensor, got {getattr(idx, 'dtype', type(idx))}")
    if idx.dim() < 1 or idx.shape[0] != x.shape[0]:
        raise ValueError(f"batch mismatch: x {tuple(x.shape)} vs idx {tuple(idx.shape)}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= x.shape[1]):
        raise ValueError(
            f"idx must lie in [0, {x.shape[1]}), got [{int(idx.min())}, {int(idx.max())}]"
        )
    B = x.shape[0]
    flat = idx.reshape(B, -1).long()
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])


def _batched(x: Tensor) -> tuple[Tensor, bool]:
    return (x, False) if x.dim() == 3 else (x.unsqueeze(0), True)


def _order(dist: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row of k candidates by (distance, index)."""
    by_idx, p = idx.sort(dim=-1)
    d = dist.gather(-1, p)
    d, q = d.sort(dim=-1, stable=True)
    return d, by_idx.gather(-1, q)


def _knn_brute(xb: Tensor, qb: Tensor, k: int, self_mask: bool) -> tuple[Tensor, Tensor]:
    M, N = qb.shape[1], xb.shape[1]
    step = max(1, _CHUNK_PAIRS // max(N, 1))
    dists, idxs = [], []
    for lo in range(0, M, step):
        q = qb[:, lo : lo + step]
        d = torch.cdist(q, xb, compute_mode="donot_use_mm_for_euclid_dist")  # (B, m, N), exact
        if self_mask:
            r = torch.arange(lo, lo + q.shape[1], device=d.device)
            eye = r.view(-1, 1) == torch.arange(N, device=d.device).view(1, -1)
            d = d.masked_fill(eye, float("inf"))
        dist, idx = d.topk(k, dim=-1, largest=False, sorted=True)
        # exact ties at the k-th distance (duplicates): topk may pick any of them, a stable
        # sort picks the lowest indices (rare, so only then)
        kth = dist[..., -1:]
        if ((d == kth).sum(-1) > (dist == kth).sum(-1)).any():
            dist, idx = torch.sort(d, dim=-1, stable=True)
            dist, idx = dist[..., :k], idx[..., :k]
        else:
            dist, idx = _order(dist, idx)
        dists.append(dist)
        idxs.append(idx)
    return torch.cat(idxs, 1), torch.cat(dists, 1)


def _knn_tree(xb: Tensor, qb: Tensor, k: int, exclude_self: bool) -> tuple[Tensor, Tensor]:
    from scipy.spatial import cKDTree

    workers = max(1, torch.get_num_threads())
    B, M = xb.shape[0], qb.shape[1]
    kk = k + 1 if exclude_self else k
    xs = xb.detach().cpu().double().numpy()
    qs = xs if exclude_self else qb.detach().cpu().double().numpy()
    ii = np.empty((B, M, kk), dtype=np.int64)
    dd = np.empty((B, M, kk), dtype=np.float64)
    for b in range(B):
        d, i = cKDTree(xs[b]).query(qs[b], kk, workers=workers)
        ii[b], dd[b] = np.reshape(i, (M, kk)), np.reshape(d, (M, kk))
    idx, dist = torch.from_numpy(ii), torch.from_numpy(dd)
    if exclude_self:
        keep = idx != torch.arange(M).view(1, M, 1)
        keep[..., -1] &= ~keep.all(-1)  # self not among them (duplicates): drop the farthest
        idx, dist = idx[keep].view(B, M, k), dist[keep].view(B, M, k)
    idx = idx.to(xb.device)
    if xb.requires_grad or qb.requires_grad:  # exact distances again, in torch, for autograd
        nb = torch.gather(xb, 1, idx.reshape(B, -1, 1).expand(-1, -1, xb.shape[-1]))
        d = (qb.unsqueeze(2) - nb.view(*idx.shape, xb.shape[-1])).pow(2).sum(-1).sqrt()
        return idx, d
    # cKDTree's float64 distances are computed from coordinate differences: exact
    return idx, dist.to(device=xb.device, dtype=xb.dtype)


def knn(
    x: Tensor,
    k: int,
    query: Tensor | None = None,
    *,
    exclude_self: bool = False,
    method: Literal["auto", "brute", "tree"] = "auto",
) -> tuple[Tensor, Tensor]:
    """k nearest neighbours of each query point among ``x``, sorted by distance.

    Args:
        x (Tensor): reference points, (N, D) or (B, N, D).
        k (int): number of neighbours.
        query (Tensor, optional): query points (M, D) or (B, M, D); defaults to ``x``.
        exclude_self (bool): drop the query itself (only when ``query`` is ``None``): asks for
            k+1 neighbours and removes each point's own index (default: ``False``).
        method (str): ``"brute"`` (exact differences, any device), ``"tree"`` (scipy cKDTree,
            CPU) or ``"auto"``: the tree on CPU for ``N >= TREE_MIN_POINTS``, else brute force
            (default: ``"auto"``).

    Returns:
        ``(idx, dist)``: (…, M, k) int64 indices into ``x`` and Euclidean distances, ascending
        (exact: computed from coordinate differences, zero for a point and itself; the gradient
        flows to ``x`` and ``query`` through ``dist``). Duplicates are allowed; ties are broken by
        index on the brute path (in cKDTree's order on the tree path).

    Raises:
        ValueError: k < 1, k larger than the number of available points, NaN input, shape
        mismatch, unknown method. TypeError: non-tensor or non-floating input.
    """
    check_points(x, "x", dim=None)
    check_int(k, "k", 1)
    if method not in ("auto", "brute", "tree"):
        raise ValueError(f"method must be 'auto', 'brute' or 'tree', got {method!r}")
    q = x if query is None else check_points(query, "query", dim=x.shape[-1])
    if query is not None and query.dim() != x.dim():
        raise ValueError(
            f"query {tuple(query.shape)} and x {tuple(x.shape)} must have the same rank"
        )
    if query is not None and x.dim() == 3 and query.shape[0] != x.shape[0]:
        raise ValueError(f"query {tuple(query.shape)} and x {tuple(x.shape)}: batch sizes differ")
    if query is not None and query.dtype != x.dtype:
        raise TypeError(f"query dtype {query.dtype} differs from x dtype {x.dtype}")
    self_ex = bool(exclude_self) and query is None
    n_avail = x.shape[-2] - (1 if self_ex else 0)
    if k > n_avail:
        raise ValueError(
            f"k={k} exceeds the {n_avail} available points (x has shape {tuple(x.shape)}"
            f"{', self excluded' if self_ex else ''})"
        )
    xb, squeeze = _batched(x)
    qb, _ = _batched(q)
    use_tree = method == "tree" or (
        method == "auto" and x.device.type == "cpu" and xb.shape[1] >= TREE_MIN_POINTS
    )
    if use_tree and x.device.type != "cpu":
        raise ValueError(f"method='tree' needs CPU tensors, got x on {x.device}")
    if use_tree:
        idx, dist = _knn_tree(xb, qb, k, self_ex)
    else:
        idx, dist = _knn_brute(xb, qb, k, self_ex)
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
    check_real(radius, "radius", 0.0, lo_open=True)
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
    check_int(n, "n")
    if not 1 <= n <= N:
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
    cpu = xb.device.type == "cpu" and xb.dtype in (torch.float32, torch.float64)
    fps = _fps_numpy if cpu else _fps_torch
    out = fps(xb.detach(), n, cur)
    return out[0] if squeeze else out


def _fps_torch(xb: Tensor, n: int, cur: Tensor) -> Tensor:
    """The FPS loop in torch ops (accelerators; vectorised over the batch)."""
    B, N, _ = xb.shape
    out = torch.empty(B, n, dtype=torch.long, device=xb.device)
    best = torch.full((B, N), float("inf"), dtype=xb.dtype, device=xb.device)
    ar = torch.arange(B, device=xb.device)
    for i in range(n):
        out[:, i] = cur
        d = ((xb - xb[ar, cur].unsqueeze(1)) ** 2).sum(-1)
        best = torch.minimum(best, d)
        cur = best.argmax(dim=1)
    return out


def _fps_numpy(xb: Tensor, n: int, cur: Tensor) -> Tensor:
    """The same loop on the CPU in NumPy over one contiguous array per coordinate: each of the
    ``n`` steps is a handful of length-N vector ops, where torch's per-op dispatch dominated (about
    5x faster at N = 2048, identical indices: the same squared distances summed in the same order,
    the first maximum on ties)."""
    a = xb.numpy()
    B, N, _ = a.shape
    out = np.empty((B, n), dtype=np.int64)
    t = np.empty(N, dtype=a.dtype)
    d = np.empty(N, dtype=a.dtype)
    for b in range(B):
        px, py, pz = (np.ascontiguousarray(a[b, :, j]) for j in range(3))
        best = np.full(N, np.inf, dtype=a.dtype)
        c = int(cur[b])
        ob = out[b]
        for i in range(n):
            ob[i] = c
            np.subtract(px, px[c], out=t)
            np.multiply(t, t, out=d)
            np.subtract(py, py[c], out=t)
            t *= t
            d += t
            np.subtract(pz, pz[c], out=t)
            t *= t
            d += t
            np.minimum(best, d, out=best)
            c = int(best.argmax())
    return torch.from_numpy(out)
