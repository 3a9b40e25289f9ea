"""Argument checks for the causal package's public entry points (private), on top of
``invariance.core.checks``: errors name the argument."""

from __future__ import annotations

from torch import Tensor

from invariance.core.checks import check_float, check_seed, check_tensor

__all__ = ["check_float_tensor", "check_number", "check_seed"]


def check_float_tensor(
    name: str, t: object, *, dims: tuple[int, ...] | None = None, nonempty: bool = True
) -> Tensor:
    """``t`` is a finite floating-point tensor with ``t.dim()`` in ``dims`` (and, with
    ``nonempty``, elements)."""
    return check_tensor(name, t, ndim=dims, floating=True, nonempty=nonempty)


def check_number(name: str, v: object, *, lo: float = 0.0, strict: bool = False) -> float:
    """``v`` is a finite real number ``>= lo`` (``> lo`` when ``strict``)."""
    return check_float(name, v, lo, lo_open=strict)
