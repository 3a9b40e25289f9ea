"""Reusable layers and losses of invariance.sequence."""

from invariance.sequence.nn.eisl_loss import EISLLoss, eisl_loss, resolve_ngrams
from invariance.sequence.nn.s4_layers import (
    S4DKernel,
    S4Kernel,
    S4Layer,
    S4Model,
    TiedDropout,
    ssm_param_groups,
)
from invariance.sequence.nn.ssm_kernels import (
    bilinear_dense,
    c_tilde,
    cauchy_dplr_kernel,
    dense_kernel,
    discretize_diag,
    dplr_full,
    fft_conv,
    vandermonde_kernel,
)

__all__ = [
    "S4DKernel",
    "S4Kernel",
    "S4Layer",
    "S4Model",
    "TiedDropout",
    "ssm_param_groups",
    "eisl_loss",
    "EISLLoss",
    "resolve_ngrams",
    "discretize_diag",
    "vandermonde_kernel",
    "dplr_full",
    "bilinear_dense",
    "dense_kernel",
    "c_tilde",
    "cauchy_dplr_kernel",
    "fft_conv",
]
