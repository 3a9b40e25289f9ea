"""Small private helpers."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def threads(n: int = 1) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore (tiny models run faster on one)."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
