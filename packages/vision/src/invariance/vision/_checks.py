"""Argument checks shared by the public entry points (each error names the argument)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_tensor", "check_int", "check_number"]


def check_tensor(
    x: object,
    name: str,
    *,
    dims: int | tuple[int, ...] | None = None,
    floating: bool = True,
    finite: bool = True,
    nonempty: bool = True,
    expected: str = "",
) -> Tensor:
    """``x`` is a tensor with ``dims`` dimensions, floating (when ``floating``), non-empty and
    finite; returns it."""
    what = f" {expected}" if expected else ""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{what}, got {type(x).__name__}")
    if dims is not None:
        allowed = (dims,) if isinstance(dims, int) else dims
        if x.dim() not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} dimensions"
                f"{what}, got shape {tuple(x.shape)}"
            )
    if floating and (not x.is_floating_point()):
        raise TypeError(f"{name} must be a floating tensor{what}, got {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} holds NaN or inf")
    return x


def check_int(v: object, name: str, *, lo: int = 1) -> int:
    """``v`` is an int >= ``lo``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {v}")
    return v


def check_number(
    v: object, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> float:
    """``v`` is a finite real number in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return float(v)
