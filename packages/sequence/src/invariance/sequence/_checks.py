"""Argument checks for the sequence package's public entry points (private): the shared checks of
``invariance.core.checks``, with complex tensors (spectra) accepted where floating ones are."""

from __future__ import annotations

from functools import partial

from invariance.core.checks import check_float, check_int
from invariance.core.checks import check_tensor as _check_tensor

__all__ = ["check_float", "check_int", "check_tensor"]

check_tensor = partial(_check_tensor, complex_ok=True)
