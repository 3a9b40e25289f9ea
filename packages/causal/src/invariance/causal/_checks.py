"""Argument checks for the causal package's public entry points (private), on top of
``invariance.core.checks``: errors name the argument."""

from __future__ import annotations

import torch
from torch import Tensor

from invariance.core.checks import check_choice, check_float, check_int, check_seed, check_tensor

__all__ = [
    "check_choice",
    "check_cov_stack",
    "check_env_xy",
    "check_float",
    "check_float_tensor",
    "check_int",
    "check_number",
    "check_seed",
    "check_tensor",
]


def check_float_tensor(
    name: str, t: object, *, dims: tuple[int, ...] | None = None, nonempty: bool = True
) -> Tensor:
    """``t`` is a finite floating-point tensor with ``t.dim()`` in ``dims`` (and, with
    ``nonempty``, elements)."""
    return check_tensor(name, t, ndim=dims, floating=True, nonempty=nonempty)


def check_number(name: str, v: object, *, lo: float = 0.0, strict: bool = False) -> float:
    """``v`` is a finite real number ``>= lo`` (``> lo`` when ``strict``)."""
    return check_float(name, v, lo, lo_open=strict)


def check_env_xy(x: object, y: object, *, who: str = "") -> None:
    """``x`` ``(E, n, d)`` and ``y`` ``(E, n)``: finite floating per-environment samples
    (``who``, e.g. ``"empirical_covariance: "``, prefixes the shape-mismatch message)."""
    check_float_tensor("x", x, dims=(3,))
    check_float_tensor("y", y, dims=(2,))
    if x.shape[:2] != y.shape:
        raise ValueError(
            f"{who}expected x (E, n, d) and y (E, n), got {tuple(x.shape)} and {tuple(y.shape)}"
        )


def check_cov_stack(cov: object, name: str = "cov") -> Tensor:
    """A stack of joint covariances ``(E, d+1, d+1)`` (``Y`` last), finite and floating; a 2-D
    ``(d+1, d+1)`` one is one environment and gets ``E = 1``. Returns the 3-D stack."""
    if not isinstance(cov, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(cov).__name__}")
    if cov.dim() == 2:
        cov = cov.unsqueeze(0)
    if cov.dim() != 3 or cov.shape[-1] != cov.shape[-2] or cov.shape[-1] < 2:
        raise ValueError(
            f"{name} must have shape (E, d+1, d+1) with d >= 1, got {tuple(cov.shape)}"
        )
    if cov.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one environment, got shape {tuple(cov.shape)}")
    if not cov.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {cov.dtype}")
    if not torch.isfinite(cov).all():
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return cov
