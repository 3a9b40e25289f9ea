"""Correspondence-based registration toolkit shared by the matching methods (RoITr, PARE-Net).

* :mod:`~.pairs`: seeded source/target pairs with ground truth (asymmetric primitive assemblies or
  real meshes, independent sampling per fragment, half-space crops for normal and low overlap,
  random SO(3) + translation, noise, exact normals);
* :mod:`~.solvers`: weighted Procrustes, vectorised RANSAC, log-domain optimal transport with a
  dustbin;
* :mod:`~.metrics`: RRE, RTE, inlier ratio, feature-match recall, RMSE and registration recall.

Point-pair features live in :func:`invariance.geometry.ops.point_pair_features`.
"""

from .metrics import (
    Thresholds,
    inlier_ratio,
    registration_metrics,
    registration_rmse,
    rotation_error,
    summarize,
    translation_error,
)
from .pairs import SPLITS, Assembly, RegistrationPair, RegistrationPairs, make_pair, random_assembly
from .solvers import RansacResult, log_optimal_transport, ransac, weighted_procrustes

__all__ = [
    "SPLITS",
    "Assembly",
    "RegistrationPair",
    "RegistrationPairs",
    "make_pair",
    "random_assembly",
    "weighted_procrustes",
    "ransac",
    "RansacResult",
    "log_optimal_transport",
    "Thresholds",
    "rotation_error",
    "translation_error",
    "inlier_ratio",
    "registration_rmse",
    "registration_metrics",
    "summarize",
]
