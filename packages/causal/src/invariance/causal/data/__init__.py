"""Procedural data with ground truth for invariance.causal (and the shipped PBMC reader)."""

from invariance.causal.data.exchangeable import (
    make_bivariate_exchangeable,
    make_linear_gaussian_icm,
    make_multivariate_binary,
)
from invariance.causal.data.scrna import (
    load_pbmc68k_reduced,
    make_scrna_counts,
    min_max_scale,
    pbmc68k_path,
)
from invariance.causal.data.sem import LinearSEM, empirical_covariance

__all__ = [
    "LinearSEM",
    "empirical_covariance",
    "make_bivariate_exchangeable",
    "make_linear_gaussian_icm",
    "make_multivariate_binary",
    "make_scrna_counts",
    "load_pbmc68k_reduced",
    "min_max_scale",
    "pbmc68k_path",
]
