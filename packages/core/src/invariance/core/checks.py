"""Argument checks for public entry points: every error names the argument.

The bad-input contract of every package is that a public function given a wrong type raises
``TypeError`` and a wrong value (shape, range, NaN/inf, empty) raises ``ValueError``, both with a
message that starts with the argument's name. These checks implement it once; the domain packages
call them (some through a thin private ``_checks`` module that fixes their own defaults).

>>> check_int("steps", 3, lo=1)
3
>>> check_float("lr", 0.0, lo=0.0, lo_open=True)
Traceback (most recent call last):
...
ValueError: lr must be > 0.0, got 0.0
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["all_finite", "check_choice", "check_float", "check_int", "check_seed", "check_tensor"]


def all_finite(x: Tensor) -> bool:
    """Whether every element of ``x`` is finite. The sum is checked first: a NaN or an inf always
    makes it non-finite, so a finite sum settles it with one reduction (about 20x cheaper than an
    elementwise ``isfinite`` on the CPU); a non-finite sum (a bad value, or finite values whose sum
    overflows) falls through to the elementwise check.

    >>> all_finite(torch.tensor([1.0, 2.0])), all_finite(torch.tensor([1.0, float("nan")]))
    (True, False)
    """
    x = x.detach()
    if not (x.is_floating_point() or x.is_complex()):
        return True
    if bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def _range_message(name: str, v, lo, hi, lo_open: bool, hi_open: bool) -> str:
    if hi is None:
        return f"{name} must be {'>' if lo_open else '>='} {lo}, got {v}"
    if lo is None:
        return f"{name} must be {'<' if hi_open else '<='} {hi}, got {v}"
    left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
    return f"{name} must be in {left}{lo}, {hi}{right}, got {v}"


def check_int(name: str, v: Any, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` is an integer (Python or NumPy, not bool) in ``[lo, hi]``; returns ``int(v)``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(v).__name__} {v!r}")
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise ValueError(_range_message(name, v, lo, hi, False, False))
    return int(v)


def check_float(
    name: str,
    v: Any,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``v`` is a finite real number (not a bool) in the interval from ``lo`` to ``hi``, each end
    open where asked; returns ``float(v)``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(v).__name__} {v!r}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    bad_lo = lo is not None and (v <= lo if lo_open else v < lo)
    bad_hi = hi is not None and (v >= hi if hi_open else v > hi)
    if bad_lo or bad_hi:
        raise ValueError(_range_message(name, v, lo, hi, lo_open, hi_open))
    return v


def check_choice(name: str, v: Any, choices: Sequence[str]) -> str:
    """``v`` is one of the strings ``choices``; returns it."""
    if not isinstance(v, str):
        raise TypeError(f"{name} must be a str, one of {list(choices)}, got {type(v).__name__}")
    if v not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {v!r}")
    return v


def check_seed(seed: Any) -> int:
    """``seed`` is an int (``None`` means 0); returns it."""
    if seed is None:
        return 0
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    return int(seed)


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | Sequence[int] | None = None,
    floating: bool = False,
    integer: bool = False,
    complex_ok: bool = False,
    finite: bool = True,
    nonempty: bool = True,
    expected: str = "",
) -> Tensor:
    """``x`` is a tensor with ``ndim`` dimensions (an int or the allowed ints), of a floating dtype
    (``floating``; complex too with ``complex_ok``) or an integer dtype (``integer``), with
    elements (``nonempty``) and no NaN/inf (``finite``); returns it. ``expected`` is appended to the
    type and shape messages (e.g. ``"of shape (N, 3)"``)."""
    what = f" {expected}" if expected else ""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{what}, got {type(x).__name__}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in allowed:
            want = " or ".join(map(str, allowed))
            raise ValueError(
                f"{name} must have {want} dimensions{what}, got shape {tuple(x.shape)}"
            )
    inexact = x.is_floating_point() or (complex_ok and x.is_complex())
    if floating and not inexact:
        raise TypeError(f"{name} must be a floating-point tensor{what}, got dtype {x.dtype}")
    if integer and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must hold integer ids, got dtype {x.dtype}")
    if nonempty and x.numel() == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")
    if finite and (x.is_floating_point() or x.is_complex()):
        if not all_finite(x):
            raise ValueError(f"{name} must be finite, but it contains NaN or inf")
    return x
