"""Pose solvers for correspondence-based registration: weighted Procrustes (Kabsch), a vectorised
RANSAC over correspondences, and log-domain optimal transport with a dustbin.

Convention (as everywhere in the package): row vectors, ``q = p @ R.T + t``.

* :func:`weighted_procrustes`: the rigid motion minimising ``sum_i w_i ||R p_i + t - q_i||^2``
  (Kabsch/Umeyama without scale), batched over leading dimensions, always a proper rotation.
* :func:`ransac`: every hypothesis from a random minimal sample is solved in one batched SVD; the
  inlier counts of all hypotheses come from one batched residual; the best is refined by
  weighted Procrustes on its inliers.
* :func:`log_optimal_transport`: Sinkhorn iterations in log space on a score matrix augmented with
  a learnable dustbin row and column (SuperGlue's formulation, as used by GeoTransformer and
  RoITr for fine matching): real rows and columns have mass ``1/(m+n)``, the dustbin row
  ``n/(m+n)``, the dustbin column ``m/(m+n)``; the returned log-assignment is rescaled so that a
  real row sums to 1. Optional row/column masks leave padded slots out (``m``, ``n`` then count
  the valid ones), as the official implementations do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["weighted_procrustes", "ransac", "RansacResult", "log_optimal_transport"]


def _check_cloud(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (..., N, 3), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")


def _kabsch(src: Tensor, tgt: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unchecked batched weighted Kabsch; ``w`` sums to 1 over the points. Returns R, t, singular
    values of the cross-covariance."""
    mu_s = (w.unsqueeze(-1) * src).sum(-2)
    mu_t = (w.unsqueeze(-1) * tgt).sum(-2)
    ps, pt = src - mu_s.unsqueeze(-2), tgt - mu_t.unsqueeze(-2)
    H = torch.einsum("...ni,...n,...nj->...ij", ps, w, pt)
    U, S, Vh = torch.linalg.svd(H)
    V = Vh.transpose(-1, -2)
    d = torch.sign(torch.linalg.det(V @ U.transpose(-1, -2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.ones(*d.shape, 3, dtype=src.dtype, device=src.device)
    D[..., 2] = d
    R = (V * D.unsqueeze(-2)) @ U.transpose(-1, -2)
    t = mu_t - (mu_s.unsqueeze(-2) @ R.transpose(-1, -2)).squeeze(-2)
    return R, t, S


def weighted_procrustes(
    src: Tensor, tgt: Tensor, weights: Tensor | None = None, *, rtol: float = 1e-9
) -> tuple[Tensor, Tensor]:
    """Rigid motion ``(R, t)`` with ``tgt ≈ src @ R.T + t`` in the weighted least-squares sense.

    Args:
        src, tgt: corresponding points ``(..., N, 3)``, ``N >= 3``.
        weights: ``(..., N)`` non-negative weights, not all zero (default: uniform).
        rtol: the weighted points must span at least a plane: the second singular value of the
            cross-covariance must exceed ``rtol`` times the first, otherwise the rotation is not
            determined and a ``ValueError`` is raised.

    Returns:
        ``R (..., 3, 3)`` with ``det R = +1`` and ``t (..., 3)``.
    """
    _check_cloud(src, "src")
    _check_cloud(tgt, "tgt")
    if src.shape != tgt.shape:
        raise ValueError(f"src {tuple(src.shape)} and tgt {tuple(tgt.shape)} must match")
    if src.shape[-2] < 3:
        raise ValueError(f"src needs at least 3 correspondences, got {src.shape[-2]}")
    if weights is None:
        w = torch.full(src.shape[:-1], 1.0 / src.shape[-2], dtype=src.dtype, device=src.device)
    else:
        if not isinstance(weights, Tensor) or not weights.is_floating_point():
            raise TypeError("weights must be a floating tensor")
        if weights.shape != src.shape[:-1]:
            raise ValueError(
                f"weights must have shape {tuple(src.shape[:-1])}, got {tuple(weights.shape)}"
            )
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and non-negative")
        total = weights.sum(-1, keepdim=True)
        if (total <= 0).any():
            raise ValueError("weights sum to zero for some problem: nothing to align")
        w = (weights / total).to(src.dtype)
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    R, t, S = _kabsch(src, tgt, w)
    bad = S[..., 1] <= rtol * S[..., 0]
    if bad.any():
        raise ValueError(
            "degenerate Procrustes problem: the weighted src/tgt points are coincident or "
            "collinear, so the rotation is not determined"
        )
    return R, t


@dataclass
class RansacResult:
    """Output of :func:`ransac`: the pose, the inlier mask of the correspondences, the number of
    hypotheses scored and the best hypothesis' inlier count (before refinement)."""

    R: Tensor
    t: Tensor
    inliers: Tensor
    num_hypotheses: int
    best_count: int


def ransac(
    src: Tensor,
    tgt: Tensor,
    *,
    threshold: float = 0.05,
    iterations: int = 1000,
    sample_size: int = 3,
    refine_steps: int = 2,
    chunk: int = 256,
    generator: torch.Generator | None = None,
) -> RansacResult:
    """Rigid RANSAC over correspondences ``src[i] <-> tgt[i]`` (``(M, 3)`` each).

    ``iterations`` minimal samples of ``sample_size`` distinct correspondences are drawn at once,
    solved by one batched Kabsch and scored by their inlier count (residual ``< threshold``) in
    chunks of ``chunk`` hypotheses; the best is refined ``refine_steps`` times by Procrustes on
    its inliers. Deterministic for a given ``generator``.
    """
    _check_cloud(src, "src")
    _check_cloud(tgt, "tgt")
    if src.dim() != 2 or src.shape != tgt.shape:
        raise ValueError(
            f"src and tgt must both be (M, 3) correspondences, got {tuple(src.shape)} and "
            f"{tuple(tgt.shape)}"
        )
    M = src.shape[0]
    if not isinstance(sample_size, int) or sample_size < 3:
        raise ValueError(f"sample_size must be an int >= 3, got {sample_size!r}")
    if M < sample_size:
        raise ValueError(f"src has {M} correspondences, fewer than sample_size={sample_size}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be an int >= 1, got {iterations!r}")
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold > 0):
        raise ValueError(f"threshold must be a positive finite number, got {threshold!r}")
    if not isinstance(refine_steps, int) or refine_steps < 0:
        raise ValueError(f"refine_steps must be an int >= 0, got {refine_steps!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an int >= 1, got {chunk!r}")
    idx = torch.rand(iterations, M, generator=generator).argsort(dim=1)[:, :sample_size]
    idx = idx.to(src.device)
    w = torch.full((iterations, sample_size), 1.0 / sample_size, dtype=src.dtype, device=src.device)
    R, t, _ = _kabsch(src[idx], tgt[idx], w)
    thr2 = float(threshold) ** 2
    counts = torch.empty(iterations, dtype=torch.long, device=src.device)
    for a in range(0, iterations, chunk):
        b = min(iterations, a + chunk)
        pred = torch.einsum("mj,hij->hmi", src, R[a:b]) + t[a:b, None, :]
        counts[a:b] = (((pred - tgt) ** 2).sum(-1) < thr2).sum(-1)
    best = int(torch.argmax(counts))
    Rb, tb = R[best], t[best]
    inl = ((src @ Rb.T + tb - tgt) ** 2).sum(-1) < thr2
    for _ in range(refine_steps):
        if int(inl.sum()) < 3:
            break
        w_in = inl.to(src.dtype)
        Rr, tr, S = _kabsch(src, tgt, w_in / w_in.sum())
        if S[1] <= 1e-9 * S[0]:
            break
        new = ((src @ Rr.T + tr - tgt) ** 2).sum(-1) < thr2
        if int(new.sum()) < int(inl.sum()):
            break
        Rb, tb, inl = Rr, tr, new
    return RansacResult(Rb, tb, inl, iterations, int(counts[best]))


def log_optimal_transport(
    scores: Tensor,
    alpha: Tensor | float,
    iters: int = 100,
    *,
    row_mask: Tensor | None = None,
    col_mask: Tensor | None = None,
) -> Tensor:
    """Log-domain Sinkhorn with a dustbin (see the module docstring).

    Args:
        scores: ``(B, M, N)`` or ``(M, N)`` matching scores.
        alpha: the dustbin score (a learnable scalar in RoITr/GeoTransformer, initialised to 1).
        iters: Sinkhorn iterations (default: ``100``).
        row_mask, col_mask: ``(B, M)`` / ``(B, N)`` bool, ``False`` for padded rows/columns
            (patches with fewer points than slots): as in GeoTransformer/RoITr they get no mass
            (score and marginal ``-1e6``) and the masses use the valid counts only.

    Returns:
        ``(B, M + 1, N + 1)`` (or ``(M + 1, N + 1)``) log-assignment; ``exp`` of a real row sums
        to 1 at convergence, the last row/column are the dustbins.
    """
    if not isinstance(scores, Tensor) or not scores.is_floating_point():
        raise TypeError("scores must be a floating tensor")
    squeeze = scores.dim() == 2
    if squeeze:
        scores = scores.unsqueeze(0)
    if scores.dim() != 3 or 0 in scores.shape:
        raise ValueError(f"scores must be (B, M, N) with B, M, N >= 1, got {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contains NaN or Inf values")
    if not isinstance(iters, int) or isinstance(iters, bool) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, Tensor)):
        raise TypeError(f"alpha must be a number or a scalar tensor, got {alpha!r}")
    alpha = torch.as_tensor(alpha, dtype=scores.dtype, device=scores.device)
    if alpha.numel() != 1 or not torch.isfinite(alpha).all():
        raise ValueError(f"alpha must be a finite scalar, got {alpha}")
    B, m, n = scores.shape
    rm = _mask(row_mask, (B, m), squeeze, "row_mask", scores.device)
    cm = _mask(col_mask, (B, n), squeeze, "col_mask", scores.device)
    bins0 = alpha.reshape(1, 1, 1).expand(B, m, 1)
    bins1 = alpha.reshape(1, 1, 1).expand(B, 1, n)
    corner = alpha.reshape(1, 1, 1).expand(B, 1, 1)
    Z = torch.cat([torch.cat([scores, bins0], 2), torch.cat([bins1, corner], 2)], 1)
    ms = rm.sum(1).to(scores.dtype).clamp_min(1)  # (B,) valid rows
    ns = cm.sum(1).to(scores.dtype).clamp_min(1)
    norm = -(ms + ns).log()  # (B,)
    log_mu = torch.cat([norm[:, None].expand(B, m), (ns.log() + norm)[:, None]], 1)
    log_nu = torch.cat([norm[:, None].expand(B, n), (ms.log() + norm)[:, None]], 1)
    if row_mask is not None or col_mask is not None:
        pad_r = torch.cat([~rm, rm.new_zeros(B, 1)], 1)  # the dustbins are never padded
        pad_c = torch.cat([~cm, cm.new_zeros(B, 1)], 1)
        Z = Z.masked_fill(pad_r[:, :, None] | pad_c[:, None, :], _NINF)
        log_mu = log_mu.masked_fill(pad_r, _NINF)
        log_nu = log_nu.masked_fill(pad_c, _NINF)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(Z + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(Z + u.unsqueeze(2), dim=1)
    out = Z + u.unsqueeze(2) + v.unsqueeze(1) - norm[:, None, None]
    return out.squeeze(0) if squeeze else out


_NINF = -1e6  # the "no mass" log-score of padded slots (GeoTransformer's finite -inf)


def _mask(mask: Tensor | None, shape: tuple[int, int], squeeze: bool, name: str, device) -> Tensor:
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=device)
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor")
    if squeeze and mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if tuple(mask.shape) != shape:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(mask.shape)}")
    return mask
