"""Benchmark registry and a small timing helper."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["register_bench", "list_benches", "get_bench", "time_fn"]

_BENCHES: dict[tuple[str, str], Callable[..., dict]] = {}


def register_bench(domain: str, name: str):
    """Register ``fn(*, device="cpu", quick=False, ...) -> dict`` as ``invariance-<domain> bench
    <name>``; keyword arguments become CLI flags."""

    def deco(fn: Callable[..., dict]) -> Callable[..., dict]:
        _BENCHES[(domain, name)] = fn
        return fn

    return deco


def list_benches(domain: str | None = None) -> list[tuple[str, str]]:
    return sorted(k for k in _BENCHES if domain is None or k[0] == domain)


def get_bench(domain: str, name: str) -> Callable[..., dict]:
    try:
        return _BENCHES[(domain, name)]
    except KeyError:
        known = ", ".join(n for d, n in list_benches(domain)) or "none"
        raise KeyError(f"unknown bench {name!r} for {domain}; known: {known}") from None


def time_fn(
    fn: Callable[[], Any],
    *,
    warmup: int = 3,
    repeat: int = 20,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Median / min wall time of ``fn()`` in seconds (CUDA-synchronised when on a GPU)."""
    dev = torch.device(device) if device is not None else None
    sync = (
        (lambda: torch.cuda.synchronize(dev))
        if dev is not None and dev.type == "cuda"
        else (lambda: None)
    )
    for _ in range(warmup):
        fn()
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(ts), "min_s": min(ts), "repeat": repeat}
