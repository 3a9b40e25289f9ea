"""Small private helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


@contextlib.contextmanager
def threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore (tiny models run faster on one)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def rows_dense(p: Tensor) -> bool:
    """Each slice along dim 0 is one dense block of memory (contiguous, or channels-last 4-D)."""
    if p.is_contiguous():
        return True
    return (
        p.ndim == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and p.stride(0) == p.numel() // p.shape[0]
    )


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the headless Agg backend, or None without matplotlib (the
    recipes' plots are optional)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
