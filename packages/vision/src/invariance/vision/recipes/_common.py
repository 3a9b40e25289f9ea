"""Private helpers shared by the vision recipes."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import invariance.core.train as core_train
from invariance.core.cache import ResultCache

#: bump when a code change alters what a cached reproduce cell trains or measures
CACHE_VERSION = 2


def reproduce_config(recipe: Any, cfg: Any, quick: bool) -> Any:
    """The config a reproduce run uses: the ``quick`` preset (if the recipe has one, else the
    tiny defaults) when ``quick``, otherwise the ``full`` preset, applied to every field the
    caller left at its tiny default (explicit overrides win)."""
    tiny = type(cfg)()
    preset = recipe.presets.get("quick" if quick else "full", {})
    over = {k: v for k, v in preset.items() if getattr(cfg, k) == getattr(tiny, k)}
    return dataclasses.replace(cfg, **over)


def cached_train_arms(
    recipe: Any, cfg: Any, arms: dict[str, dict], seeds: list[int], *, run: Any = None, tag: str
) -> dict[str, list[dict]]:
    """:func:`invariance.core.train.train_arms`, one (arm, seed) cell at a time, each cell kept
    in a :class:`~invariance.core.cache.ResultCache` under ``<run>/../vision-cache/<tag>`` (key:
    tag, arm, seed, the arm's full config and the fingerprint of the vision and core code), so
    recipes sharing cells train them once and a code change never serves an old cell. Without
    ``run`` nothing is cached."""
    cache = None
    if run is not None and getattr(run, "path", None) is not None:
        cache = ResultCache(
            Path(run.path).resolve().parent / "vision-cache" / tag,
            sources=("invariance.vision", "invariance.core"),
        )
    out: dict[str, list[dict]] = {a: [] for a in arms}
    for s in seeds:
        for arm, over in arms.items():
            c = dataclasses.replace(cfg, seed=s, **over)
            key = {
                "v": CACHE_VERSION,
                "tag": tag,
                "arm": arm,
                "seed": s,
                "cfg": dataclasses.asdict(c),
            }
            cell = cache.get(key) if cache is not None else None
            if cell is None:
                cell = core_train.train_arms(recipe, cfg, {arm: over}, [s], run=run)[arm][0]
                if cache is not None:
                    cache.put(key, cell)
            out[arm].append(cell)
    return out


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    return m, (sum((v - m) ** 2 for v in values) / max(1, n - 1)) ** 0.5
