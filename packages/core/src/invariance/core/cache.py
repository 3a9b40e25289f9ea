"""A small JSON cache for reproduce grids: one file per cell, keyed by a dict.

Reproduce experiments that share cells (several registered methods reading one grid of
``dataset x bias x seed x arm`` runs) compute each cell once::

    cache = ResultCache(run.path.parent / ".cache" / "graph-grid")
    metrics = cache.get_or_compute({"arm": "igt", "seed": 0, "cfg": cfg_dict}, lambda: train(...))

The key is hashed (SHA-256 of its canonical JSON); the value must be JSON-serialisable. A cell is
written atomically (temporary file, then rename), so a killed run never leaves half a cell.

A cell computed by older code must not be served after that code changed: pass ``sources``, the
packages whose code computes the cells (``ResultCache(root, sources=("invariance.vision",
"invariance.core"))``), and a fingerprint of their source files joins every key, so editing any
of them starts a fresh set of cells.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["ResultCache", "cache_key", "source_fingerprint"]


def cache_key(key: Any) -> str:
    """SHA-256 (first 24 hex digits) of ``key``'s canonical JSON (sorted keys)."""
    try:
        text = json.dumps(key, sort_keys=True, default=str)
    except (TypeError, ValueError) as e:
        raise TypeError(f"cache key must be JSON-serialisable: {e}") from None
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@functools.cache
def source_fingerprint(package: str) -> str:
    """SHA-256 (first 16 hex digits) of every ``.py`` file of ``package`` (names and bytes), so a
    cache keyed with it changes whenever that package's code does."""
    if not isinstance(package, str) or not package:
        raise TypeError(f"package must be a dotted module name, got {package!r}")
    mod = importlib.import_module(package)
    roots = [Path(p) for p in getattr(mod, "__path__", [])] or [Path(mod.__file__)]
    h = hashlib.sha256()
    for root in roots:
        files = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in files:
            h.update(str(f.relative_to(root.parent)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


class ResultCache:
    """JSON results keyed by a dict, stored one file per key under ``root``; with ``sources``
    (package names), the fingerprint of their code joins every key."""

    def __init__(self, root: str | os.PathLike, *, sources: Sequence[str] = ()) -> None:
        if isinstance(sources, str):
            sources = (sources,)
        self.root = Path(root)
        self.sources = {p: source_fingerprint(p) for p in sources}

    def _full(self, key: Any) -> Any:
        return {"key": key, "code": self.sources} if self.sources else key

    def path(self, key: Any) -> Path:
        return self.root / f"{cache_key(self._full(key))}.json"

    def get(self, key: Any) -> Any | None:
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text())["value"]
        except (json.JSONDecodeError, KeyError):
            return None  # a damaged cell is recomputed

    def put(self, key: Any, value: Any) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        p = self.path(key)
        tmp = p.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"key": key, "code": self.sources, "value": value}, default=str))
        os.replace(tmp, p)

    def get_or_compute(self, key: Any, fn: Callable[[], Any]) -> Any:
        hit = self.get(key)
        if hit is not None:
            return hit
        value = fn()
        self.put(key, value)
        return value

    def __len__(self) -> int:
        return len(list(self.root.glob("*.json"))) if self.root.exists() else 0
