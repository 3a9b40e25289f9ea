"""Neighbourhood caching for the learned matchers: the FPS pyramid and kNN indices of a cloud are
a function of its coordinates only, so training and evaluation on a fixed pair set compute them
once per cloud. Entries are keyed by the tensor's identity *and* its in-place version counter
(a modified tensor is recomputed) and die with the tensor (weak reference)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import Tensor

__all__ = ["cached_indices"]

_CACHE: dict[int, tuple[Any, int, dict]] = {}


def cached_indices(pos: Tensor, key: tuple, fn: Callable[[], Any]) -> Any:
    """``fn()`` (index tensors computed from ``pos``), cached per ``(pos, key)``. Tensors that
    require grad are not cached (their values may be part of a graph that changes)."""
    if pos.requires_grad:
        return fn()
    k = id(pos)
    ent = _CACHE.get(k)
    if ent is None or ent[0]() is not pos or ent[1] != pos._version:
        ref = weakref.ref(pos, lambda _r, k=k: _CACHE.pop(k, None))
        ent = (ref, pos._version, {})
        _CACHE[k] = ent
    store = ent[2]
    if key not in store:
        store[key] = fn()
    return store[key]
