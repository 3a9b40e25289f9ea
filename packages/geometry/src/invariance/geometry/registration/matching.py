r"""Coarse-to-fine matching pieces shared by the learned registration methods.

* :func:`dual_normalized_scores`: ``S_ij = exp(-||f_i - g_j||^2)``, row-normalised times
  column-normalised (GeoTransformer/RoITr coarse matching);
* :func:`point_to_node`: each point joins its nearest node; a node keeps at most ``k`` of its
  points, nearest first (the patches of fine matching);
* :func:`node_overlaps`: ground-truth overlap ratio of every node pair (the fraction of node
  ``i``'s points with a point of node ``j`` within ``radius`` after the ground-truth motion);
* :func:`circle_loss`: the overlap-weighted circle loss on node descriptors (positives: overlap
  above ``pos_thr``, weight ``sqrt(overlap)``; negatives: overlap 0);
* :func:`mutual_topk`: correspondences that are in each other's top-k with confidence above a
  threshold.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops._checks import check_int, check_real, check_tensor

__all__ = [
    "check_gt",
    "dual_normalized_scores",
    "point_to_node",
    "node_overlaps",
    "circle_loss",
    "mutual_topk",
]


def dual_normalized_scores(fx: Tensor, fy: Tensor) -> Tensor:
    """``(N, d)``, ``(M, d)`` descriptors -> ``(N, M)`` dual-normalised similarities."""
    check_tensor(fx, "fx", ndim=2)
    check_tensor(fy, "fy", ndim=2)
    if fx.shape[-1] != fy.shape[-1]:
        raise ValueError(f"fx {tuple(fx.shape)} and fy {tuple(fy.shape)} must be (N, d), (M, d)")
    s = torch.exp(-(torch.cdist(fx, fy) ** 2))
    return (s / s.sum(1, keepdim=True).clamp_min(1e-12)) * (
        s / s.sum(0, keepdim=True).clamp_min(1e-12)
    )


def point_to_node(points: Tensor, nodes: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Partition ``points (N, 3)`` among ``nodes (M, 3)``.

    Returns ``idx (M, k)`` point indices (padded with the node's nearest point) and ``mask (M, k)``
    (True for real members). Every point belongs to exactly one node (before truncation to k)."""
    check_tensor(points, "points", ndim=2, last=3)
    check_tensor(nodes, "nodes", ndim=2, last=3)
    check_int(k, "k", 1)
    d = torch.cdist(nodes, points)  # (M, N)
    owner = d.argmin(dim=0)  # (N,)
    M = nodes.shape[0]
    own = owner[None, :] == torch.arange(M, device=points.device)[:, None]
    d_own = d.masked_fill(~own, float("inf"))
    kk = min(k, points.shape[0])
    dist, idx = d_own.topk(kk, dim=1, largest=False)
    mask = torch.isfinite(dist)
    nearest = d.argmin(dim=1, keepdim=True).expand_as(idx)
    idx = torch.where(mask, idx, nearest)
    if kk < k:
        pad = k - kk
        idx = torch.cat([idx, nearest[:, :1].expand(M, pad)], 1)
        mask = torch.cat([mask, torch.zeros(M, pad, dtype=torch.bool, device=mask.device)], 1)
    return idx, mask


def node_overlaps(
    src: Tensor,
    tgt: Tensor,
    src_owner: Tensor,
    tgt_owner: Tensor,
    n_src_nodes: int,
    n_tgt_nodes: int,
    R: Tensor,
    t: Tensor,
    radius: float = 0.05,
) -> Tensor:
    """``(n_src_nodes, n_tgt_nodes)`` overlap ratios from point-level ground truth.

    ``src_owner``/``tgt_owner`` give each point's node. A source point overlaps node ``j`` when
    its nearest target point (after the ground-truth motion) is within ``radius`` and belongs to
    ``j``; the ratio divides by the size of the source node."""
    moved = src @ R.T + t
    d, j = torch.cdist(moved, tgt).min(dim=1)
    ok = d < radius
    counts = torch.zeros(n_src_nodes, n_tgt_nodes, dtype=src.dtype, device=src.device)
    counts.index_put_((src_owner[ok], tgt_owner[j[ok]]), torch.ones_like(d[ok]), accumulate=True)
    sizes = torch.bincount(src_owner, minlength=n_src_nodes).clamp_min(1).to(src.dtype)
    return counts / sizes[:, None]


def circle_loss(
    fx: Tensor,
    fy: Tensor,
    overlap: Tensor,
    *,
    pos_thr: float = 0.1,
    pos_margin: float = 0.1,
    neg_margin: float = 1.4,
    pos_optimal: float = 0.1,
    neg_optimal: float = 1.4,
    log_scale: float = 24.0,
) -> Tensor:
    """Overlap-weighted circle loss on feature distances, over rows and columns (mean of both).

    Anchors without any positive or negative are left out; returns 0 when none remains. As in the
    official GeoTransformer/RoITr loss, entries outside an anchor's positive (negative) set enter
    its log-sum-exp with weight 0, i.e. as ``exp(0)`` terms (equal to RoITr's
    ``weighted_circle_loss`` to 1e-15, tests/golden_roitr_official.json)."""
    d = torch.cdist(fx, fy)
    pos = overlap > pos_thr
    neg = overlap == 0
    w_pos = overlap.clamp_min(0).sqrt() * pos
    pw = (d - pos_optimal).clamp_min(0).detach() * w_pos
    nw = (neg_optimal - d).clamp_min(0).detach() * neg
    lp = log_scale * (d - pos_margin) * pw
    ln = log_scale * (neg_margin - d) * nw
    losses = []
    for dim in (1, 0):
        keep = pos.any(dim) & neg.any(dim)
        if keep.any():
            a = torch.logsumexp(lp, dim=dim)[keep] + torch.logsumexp(ln, dim=dim)[keep]
            losses.append(torch.nn.functional.softplus(a).mean() / log_scale)
    if not losses:
        return d.sum() * 0.0
    return sum(losses) / len(losses)


def mutual_topk(scores: Tensor, k: int = 3, threshold: float = 0.05) -> tuple[Tensor, Tensor]:
    """Entries of ``scores (N, M)`` in the top-k of their row and of their column and above
    ``threshold``: returns ``(rows, cols)`` index tensors."""
    check_tensor(scores, "scores", ndim=2)
    check_int(k, "k", 1)
    check_real(threshold, "threshold")
    kr, kc = min(k, scores.shape[1]), min(k, scores.shape[0])
    row = torch.zeros_like(scores, dtype=torch.bool)
    row.scatter_(1, scores.topk(kr, dim=1).indices, True)
    col = torch.zeros_like(scores, dtype=torch.bool)
    col.scatter_(0, scores.topk(kc, dim=0).indices, True)
    sel = row & col & (scores > threshold)
    return sel.nonzero(as_tuple=True)


def check_gt(R: Tensor, t: Tensor, radius: float) -> None:
    """Ground-truth pose ``(R (3, 3), t (3,))`` and matching radius of the training losses."""
    from .metrics import check_pose

    check_pose(R, t)
    if R.dim() != 2:
        raise ValueError(f"R must be (3, 3) (one pair), got {tuple(R.shape)}")
    check_real(radius, "radius", 0.0, lo_open=True)
