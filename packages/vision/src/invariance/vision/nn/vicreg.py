"""VICReg terms (Bardes, Ponce, LeCun 2022, arXiv 2105.04906), as SIE uses them.

* :func:`variance_term`: ``mean_j relu(1 - sqrt(Var_j + eps)) / 2`` over the embedding dimensions
  (unbiased variance over the batch);
* :func:`covariance_term`: ``sum_{j != k} C_jk^2 / D`` with ``C = X_c^T X_c / (B - 1)`` of the
  centred batch;
* :func:`vicreg_loss`: ``sim * MSE(x, y) + std * (v(x) + v(y)) + cov * (c(x) + c(y))``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.vision._checks import check_number, check_tensor

__all__ = ["variance_term", "covariance_term", "vicreg_loss"]


def _emb(x: Tensor, name: str) -> Tensor:
    check_tensor(x, name, dims=2, expected="(B, D) embeddings")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs a batch of at least 2 for a variance, got {x.shape[0]}")
    return x


def variance_term(x: Tensor, eps: float = 1e-4) -> Tensor:
    """Hinge on the per-dimension standard deviation of a (B, D) batch, halved (VICReg)."""
    _emb(x, "x")
    check_number(eps, "eps", lo=0.0, lo_open=True)
    xc = x - x.mean(0)
    return torch.relu(1 - torch.sqrt(xc.var(0) + eps)).mean() / 2


def covariance_term(x: Tensor) -> Tensor:
    """Sum of squared off-diagonal covariances of a (B, D) batch, divided by D (VICReg)."""
    _emb(x, "x")
    xc = x - x.mean(0)
    c = xc.T @ xc / (x.shape[0] - 1)
    return (c.pow(2).sum() - c.diagonal().pow(2).sum()) / x.shape[1]


def vicreg_loss(
    x: Tensor, y: Tensor, *, sim: float = 25.0, std: float = 25.0, cov: float = 1.0
) -> dict[str, Tensor]:
    """VICReg on two (B, D) embedding batches; returns the terms and ``loss``."""
    _emb(x, "x")
    _emb(y, "y")
    if x.shape != y.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    for v, n in ((sim, "sim"), (std, "std"), (cov, "cov")):
        check_number(v, n, lo=0.0)
    inv = torch.nn.functional.mse_loss(x, y)
    var = variance_term(x) + variance_term(y)
    cv = covariance_term(x) + covariance_term(y)
    return {"loss": sim * inv + std * var + cov * cv, "inv": inv, "var": var, "cov": cv}
