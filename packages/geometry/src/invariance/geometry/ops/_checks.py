"""Input validation shared by the geometry package (private). Every error names the argument."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from invariance.core.checks import all_finite


def check_points(
    x: Tensor, name: str = "pos", *, dim: int | None = 3, min_points: int = 1
) -> Tensor:
    """Validate a point tensor of shape (N, D) or (B, N, D); return it unchanged."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (2, 3):
        raise ValueError(f"{name} must have shape (N, D) or (B, N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(f"{name} must have last dimension {dim}, got shape {tuple(x.shape)}")
    if x.numel() == 0 and x.shape[-2] >= min_points:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if x.shape[-2] < min_points:
        raise ValueError(
            f"{name} needs at least {min_points} points, got {x.shape[-2]} (shape {tuple(x.shape)})"
        )
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_tensor(
    x: Any,
    name: str,
    *,
    ndim: int | Sequence[int] | None = None,
    last: int | None = None,
    floating: bool = True,
    finite: bool = True,
) -> Tensor:
    """A non-empty tensor with the given rank(s) and last dimension, floating and finite."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if floating and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    dims = (ndim,) if isinstance(ndim, int) else ndim
    if dims is not None and x.dim() not in dims:
        want = " or ".join(f"{d}-d" for d in dims)
        raise ValueError(f"{name} must be {want}, got shape {tuple(x.shape)}")
    if last is not None and (x.dim() == 0 or x.shape[-1] != last):
        raise ValueError(f"{name} must have last dimension {last}, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    if finite and x.is_floating_point() and not all_finite(x):
        raise ValueError(f"{name} contains NaN or Inf values")
    return x


def check_int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An int (not a bool) in ``[lo, hi]``."""
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name} must be an int, got {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(
            f"{name} must be in [{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}], "
            f"got {v}"
        )
    return v


def check_real(
    v: Any,
    name: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """A finite real number in the interval (open ends on request)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"{name} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    bad = (lo is not None and (v < lo or (lo_open and v == lo))) or (
        hi is not None and (v > hi or (hi_open and v == hi))
    )
    if bad:
        a = "(" if lo_open else "["
        b = ")" if hi_open else "]"
        raise ValueError(
            f"{name} must be in {a}{'-inf' if lo is None else lo}, "
            f"{'inf' if hi is None else hi}{b}, got {v}"
        )
    return float(v)


def check_choice(v: Any, name: str, choices: Sequence[Any]) -> Any:
    if v not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {v!r}")
    return v
