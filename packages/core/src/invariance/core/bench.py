"""Benchmark registry and timing helpers.

:func:`compare` is how every bench in the toolkit times things: ``torch.utils.benchmark`` timers
(``blocked_autorange``), the candidates **interleaved** (the order rotates each repeat, so a load
change on the machine hits every candidate alike), several repeats, and flat result rows with the
median, the spread of the repeat medians and the speed-up against a reference. :func:`machine`
records what the figures were measured on.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["register_bench", "list_benches", "get_bench", "time_fn", "compare", "machine"]

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


def machine(device: str | torch.device | None = None) -> str:
    """One line naming the machine: CPU count, load average, torch threads, device."""
    try:
        load = "load {:.1f}/{:.1f}/{:.1f}".format(*os.getloadavg())
    except OSError:  # pragma: no cover - not on every platform
        load = "load n/a"
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    return (
        f"{name}, {os.cpu_count()} CPUs, {load}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )


def compare(
    fns: dict[str, Callable[[], Any]],
    *,
    reference: str | None = None,
    repeats: int = 5,
    min_run_time: float = 0.2,
    num_threads: int | None = None,
    device: str | torch.device | None = None,
    label: str = "",
) -> list[dict[str, Any]]:
    """Time each zero-argument callable in ``fns`` interleaved, with repeats.

    Args:
        fns: ``{name: fn}``; each ``fn()`` is one unit of work (e.g. one optimizer step).
        reference: the name others are compared with (default: the first).
        repeats: rounds; in each round every candidate runs one ``blocked_autorange`` (default 5).
        min_run_time: seconds per ``blocked_autorange`` (default 0.2).
        num_threads: torch threads during timing (default: the current setting, left
            untouched; toggling MKL's thread count between 1 and 2 was seen to break later
            batched ``torch.linalg.solve`` calls on CPU, so set threads once, up front).
        device: synchronise CUDA around each measurement when on a GPU.
        label: copied into each row (e.g. the problem size).

    Returns one flat row per candidate: ``name``, ``median_ms`` (median of the repeat medians),
    ``spread_ms`` (max - min of the repeat medians), ``repeats``, ``speedup`` (reference median /
    this median: > 1 is faster than the reference) and ``label``.
    """
    from torch.utils import benchmark

    if not fns:
        raise ValueError("compare needs at least one callable in fns")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be > 0, got {min_run_time}")
    names = list(fns)
    ref = reference if reference is not None else names[0]
    if ref not in fns:
        raise ValueError(f"reference {ref!r} is not one of {names}")
    dev = torch.device(device) if device is not None else None
    on_cuda = dev is not None and dev.type == "cuda"

    def wrap(fn: Callable[[], Any]) -> Callable[[], None]:
        if on_cuda:

            def run() -> None:
                fn()
                torch.cuda.synchronize(dev)

            return run
        return fn

    threads = torch.get_num_threads() if num_threads is None else int(num_threads)
    wrapped = {n: wrap(f) for n, f in fns.items()}
    for f in wrapped.values():  # warm-up (lazy init, caches, compilation)
        f()
    medians: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t = benchmark.Timer(stmt="fn()", globals={"fn": wrapped[n]}, num_threads=threads)
            m = t.blocked_autorange(min_run_time=min_run_time)
            medians[n].append(m.median)
    ref_med = statistics.median(medians[ref])
    rows = []
    for n in names:
        med = statistics.median(medians[n])
        rows.append(
            {
                "name": n,
                "median_ms": round(med * 1e3, 4),
                "spread_ms": round((max(medians[n]) - min(medians[n])) * 1e3, 4),
                "repeats": repeats,
                "speedup": round(ref_med / med, 3) if med > 0 else float("nan"),
                "vs": ref,
                "label": label,
            }
        )
    return rows
