"""Argument checks shared by the public entry points (errors name the argument)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["check_float_tensor", "check_number", "check_seed"]


def check_float_tensor(
    name: str, t: object, *, dims: tuple[int, ...] | None = None, nonempty: bool = True
) -> Tensor:
    """``t`` is a finite floating-point tensor with ``t.dim()`` in ``dims`` (and, with
    ``nonempty``, no zero-length dimension); raise ``TypeError``/``ValueError`` naming ``name``."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if dims is not None and t.dim() not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(t.shape)}")
    if nonempty and t.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite (it holds NaN or inf)")
    return t


def check_number(name: str, v: object, *, lo: float = 0.0, strict: bool = False) -> float:
    """``v`` is a finite real number ``>= lo`` (``> lo`` when ``strict``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v) or v < lo or (strict and v == lo):
        raise ValueError(f"{name} must be finite and {'>' if strict else '>='} {lo}, got {v!r}")
    return float(v)


def check_seed(seed: object) -> int:
    """``seed`` is an int (``None`` means 0)."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    return seed
