"""Argument checks for the optim package's public entry points (private): the shared checks of
``invariance.core.checks`` (each raises ``TypeError`` for a wrong type and ``ValueError`` for a
wrong value, naming the argument), with tensors floating-point unless asked otherwise."""

from __future__ import annotations

from typing import Any

from torch import Tensor

from invariance.core.checks import check_choice, check_float, check_int
from invariance.core.checks import check_tensor as _check_tensor

__all__ = ["check_choice", "check_float", "check_int", "check_tensor"]


def check_tensor(
    name: str,
    x: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    floating: bool = True,
    finite: bool = True,
    nonempty: bool = True,
) -> Tensor:
    """``x`` is a tensor with ``ndim`` dimensions (an int or the allowed ints), floating point
    (when ``floating``), non-empty and finite; returns it."""
    return _check_tensor(name, x, ndim=ndim, floating=floating, finite=finite, nonempty=nonempty)
