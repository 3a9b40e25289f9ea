"""Seeding helpers."""

from __future__ import annotations

import random

import numpy as np
import torch

__all__ = ["seed_everything", "make_generator", "get_rng_state", "set_rng_state"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_generator(seed: int, device: torch.device | str | None = None) -> torch.Generator:
    """A fresh ``torch.Generator`` seeded with ``seed`` (on ``device``)."""
    g = torch.Generator(device=device) if device is not None else torch.Generator()
    g.manual_seed(int(seed))
    return g


def get_rng_state() -> dict:
    """Every global RNG state (python, numpy, torch CPU, CUDA) as plain tensors and JSON values."""
    py = random.getstate()
    npst = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [
            npst[0],
            torch.from_numpy(npst[1].astype(np.int64)),
            int(npst[2]),
            int(npst[3]),
            float(npst[4]),
        ],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in state["cuda"]])
