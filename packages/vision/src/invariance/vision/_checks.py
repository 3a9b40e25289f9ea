"""Argument checks for the vision package's public entry points (private): the shared checks of
``invariance.core.checks`` with the value first, as the vision modules call them."""

from __future__ import annotations

from torch import Tensor

from invariance.core import checks as _c

__all__ = ["check_int", "check_number", "check_tensor"]


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
    return _c.check_tensor(
        name, x, ndim=dims, floating=floating, finite=finite, nonempty=nonempty, expected=expected
    )


def check_int(v: object, name: str, *, lo: int = 1) -> int:
    """``v`` is an int >= ``lo``."""
    return _c.check_int(name, v, lo)


def check_number(
    v: object, name: str, *, lo: float | None = None, hi: float | None = None, lo_open: bool = False
) -> float:
    """``v`` is a finite real number in ``[lo, hi]`` (``(lo, hi]`` when ``lo_open``)."""
    return _c.check_float(name, v, lo, hi, lo_open=lo_open)
