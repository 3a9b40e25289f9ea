"""Argument checks shared by the public entry points (private).

Each raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong value, naming the
argument, as the project's bad-input contract asks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not bool) in ``[lo, hi]``; returns it as ``int``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(f"{name} must be in [{lo}, {'inf' if hi is None else hi}], got {v}")
    return int(v)


def check_float(
    name: str,
    v: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
) -> float:
    """A finite real number (not bool) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(v).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ValueError(f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}")
    if hi is not None and v > hi:
        raise ValueError(f"{name} must be <= {hi}, got {v}")
    return float(v)


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    floating: bool = True,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """A tensor with the given number of dimensions, floating point, finite and non-empty."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.ndim not in dims:
        want = " or ".join(str(d) for d in dims)
        raise ValueError(f"{name} must have {want} dimensions, got shape {tuple(x.shape)}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def check_choice(name: str, v: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, got {type(v).__name__}")
    if v not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {v!r}")
    return v
