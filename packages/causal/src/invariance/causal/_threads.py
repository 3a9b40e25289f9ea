"""Run small experiments on one intra-op thread (tiny models gain nothing from more, and on a
shared, loaded machine several spinning threads per process slow every process down)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["single_thread"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """``torch.set_num_threads(1)`` inside the block, the previous count restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
