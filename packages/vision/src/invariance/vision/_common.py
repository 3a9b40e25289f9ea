"""Private helpers shared by the vision recipes."""

from __future__ import annotations

import dataclasses
from typing import Any


def reproduce_config(recipe: Any, cfg: Any, quick: bool) -> Any:
    """The config a reproduce run uses: the ``quick`` preset (if the recipe has one, else the
    tiny defaults) when ``quick``, otherwise the ``full`` preset, applied to every field the
    caller left at its tiny default (explicit overrides win)."""
    tiny = type(cfg)()
    preset = recipe.presets.get("quick" if quick else "full", {})
    over = {k: v for k, v in preset.items() if getattr(cfg, k) == getattr(tiny, k)}
    return dataclasses.replace(cfg, **over)


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    m = sum(values) / n
    return m, (sum((v - m) ** 2 for v in values) / max(1, n - 1)) ** 0.5

