"""Argument checks shared by the public entry points: every error names the argument."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` is an int (not a bool) in ``[lo, hi]``; returns it."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be in [{lo}, {'inf' if hi is None else hi}], got {v}")
    return v


def check_float(
    name: str,
    v: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``v`` is a finite real number in the interval (open ends where asked); returns it."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        raise ValueError(
            f"{name} must be in {left}{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}{right}, got {v}"
        )
    return v


def check_tensor(
    name: str,
    t: Any,
    *,
    ndim: int | None = None,
    floating: bool = False,
    integer: bool = False,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """``t`` is a tensor with ``ndim`` dims, of a floating (or integer) dtype, finite and with no
    zero-length dimension; returns it."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(t.shape)}")
    if floating and not (t.is_floating_point() or t.is_complex()):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if integer and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer ids, got dtype {t.dtype}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if finite and (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t
