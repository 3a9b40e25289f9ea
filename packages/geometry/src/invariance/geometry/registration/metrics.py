"""Registration metrics in the GeoTransformer / PARE-Net conventions (row vectors,
``q = p @ R.T + t``), with thresholds for objects of diameter about 2.

* RRE, relative rotation error: the angle of ``R_est R_gtᵀ`` in degrees (computed as
  ``2 asin(||R_est - R_gt||_F / sqrt(8))``, exact and stable near 0);
* RTE, relative translation error: ``||t_est - t_gt||``;
* IR, inlier ratio: the fraction of putative correspondences within ``tau1`` after the
  ground-truth motion; FMR, feature-match recall: the fraction of pairs with IR > ``tau2``;
* RMSE: mean over source points of ``||(T_gt⁻¹ T_est) p - p||``; RR, registration recall: the
  fraction of pairs with RMSE < ``tau3``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..ops._checks import check_real, check_tensor

__all__ = [
    "Thresholds",
    "rotation_error",
    "translation_error",
    "inlier_ratio",
    "registration_rmse",
    "registration_metrics",
    "summarize",
]


@dataclass(frozen=True)
class Thresholds:
    """Metric thresholds. Defaults: objects of diameter ~2 (3DMatch in metres uses tau1=0.1,
    tau3=0.2, RRE < 15 deg, RTE < 0.3)."""

    tau1: float = 0.05  # inlier distance of a correspondence
    tau2: float = 0.05  # inlier ratio above which a pair counts for feature-match recall
    tau3: float = 0.1  # RMSE below which a pair counts as registered
    max_rre: float = 15.0  # degrees
    max_rte: float = 0.1


def check_pose(R: Tensor, t: Tensor, r_name: str = "R", t_name: str = "t") -> None:
    """``R`` a finite floating ``(..., 3, 3)`` tensor and ``t`` a finite ``(..., 3)`` one with
    the same batch shape; errors name the offending argument."""
    check_tensor(R, r_name)
    check_tensor(t, t_name)
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"{r_name} must be (..., 3, 3), got {tuple(R.shape)}")
    if t.dim() < 1 or t.shape[-1] != 3 or R.shape[:-2] != t.shape[:-1]:
        raise ValueError(
            f"{t_name} must be (..., 3) with the batch shape of {r_name} {tuple(R.shape)}, got "
            f"{tuple(t.shape)}"
        )


def _check_cloud(x: Tensor, name: str) -> None:
    check_tensor(x, name, ndim=2, last=3)


def rotation_error(R_est: Tensor, R_gt: Tensor) -> Tensor:
    """Angle between two rotations, in degrees (``(...)``)."""
    if R_est.shape != R_gt.shape or R_est.shape[-2:] != (3, 3):
        raise ValueError(
            f"R_est {tuple(R_est.shape)} and R_gt {tuple(R_gt.shape)} must both be (..., 3, 3)"
        )
    fro = (R_est - R_gt).flatten(-2).norm(dim=-1)
    return torch.rad2deg(2 * torch.asin((fro / math.sqrt(8)).clamp(max=1.0)))


def translation_error(t_est: Tensor, t_gt: Tensor) -> Tensor:
    """``||t_est - t_gt||`` (``(...)``)."""
    if t_est.shape != t_gt.shape or t_est.shape[-1:] != (3,):
        raise ValueError(
            f"t_est {tuple(t_est.shape)} and t_gt {tuple(t_gt.shape)} must be (..., 3)"
        )
    return (t_est - t_gt).norm(dim=-1)


def inlier_ratio(
    src_corr: Tensor, tgt_corr: Tensor, R_gt: Tensor, t_gt: Tensor, tau1: float = 0.05
) -> Tensor:
    """Fraction of correspondences ``src_corr[i] <-> tgt_corr[i]`` (``(M, 3)``) whose distance
    after the ground-truth motion is below ``tau1`` (0 for no correspondences)."""
    check_pose(R_gt, t_gt, "R_gt", "t_gt")
    for name, x in (("src_corr", src_corr), ("tgt_corr", tgt_corr)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor")
        if x.dim() != 2 or x.shape[-1] != 3:
            raise ValueError(f"{name} must be (M, 3), got {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} contains NaN or Inf values")
    if src_corr.shape != tgt_corr.shape:
        raise ValueError(
            f"src_corr {tuple(src_corr.shape)} and tgt_corr {tuple(tgt_corr.shape)} must match"
        )
    check_real(tau1, "tau1", 0.0, lo_open=True)
    if src_corr.shape[0] == 0:
        return src_corr.new_zeros(())
    d = (src_corr @ R_gt.T + t_gt - tgt_corr).norm(dim=-1)
    return (d < tau1).to(src_corr.dtype).mean()


def registration_rmse(src: Tensor, R_est: Tensor, t_est: Tensor, R_gt: Tensor, t_gt: Tensor):
    """Mean over ``src`` points ``(N, 3)`` of ``||(T_gt⁻¹ T_est) p - p||``."""
    check_pose(R_est, t_est, "R_est", "t_est")
    check_pose(R_gt, t_gt, "R_gt", "t_gt")
    _check_cloud(src, "src")
    moved = ((src @ R_est.T + t_est) - t_gt) @ R_gt
    return (moved - src).norm(dim=-1).mean()


def registration_metrics(
    src: Tensor,
    R_est: Tensor,
    t_est: Tensor,
    R_gt: Tensor,
    t_gt: Tensor,
    *,
    src_corr: Tensor | None = None,
    tgt_corr: Tensor | None = None,
    thresholds: Thresholds = Thresholds(),
) -> dict[str, float]:
    """Every per-pair metric as floats: ``rre``, ``rte``, ``rmse``, ``registered`` (RMSE <
    tau3), ``rre_rte_ok`` (RRE and RTE below their limits) and, with correspondences, ``ir`` and
    ``fmr`` (IR > tau2)."""
    out = {
        "rre": float(rotation_error(R_est, R_gt)),
        "rte": float(translation_error(t_est, t_gt)),
        "rmse": float(registration_rmse(src, R_est, t_est, R_gt, t_gt)),
    }
    out["registered"] = float(out["rmse"] < thresholds.tau3)
    out["rre_rte_ok"] = float(out["rre"] < thresholds.max_rre and out["rte"] < thresholds.max_rte)
    if src_corr is not None and tgt_corr is not None:
        ir = float(inlier_ratio(src_corr, tgt_corr, R_gt, t_gt, thresholds.tau1))
        out["ir"] = ir
        out["fmr"] = float(ir > thresholds.tau2)
    return out


def summarize(per_pair: list[dict[str, float]]) -> dict[str, float]:
    """Dataset-level figures from :func:`registration_metrics` rows: RR (mean of
    ``registered``), mean IR, FMR, median RRE/RTE over all pairs."""
    if not per_pair:
        raise ValueError("per_pair is empty: no pairs to summarise")
    out = {"rr": sum(p["registered"] for p in per_pair) / len(per_pair)}
    for k in ("rre", "rte"):
        out[f"median_{k}"] = float(torch.tensor([p[k] for p in per_pair]).median())
    if all("ir" in p for p in per_pair):
        out["ir"] = sum(p["ir"] for p in per_pair) / len(per_pair)
        out["fmr"] = sum(p["fmr"] for p in per_pair) / len(per_pair)
    out["pairs"] = float(len(per_pair))
    return out
