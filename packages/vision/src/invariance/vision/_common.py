"""Private helpers shared by the vision recipes."""

from __future__ import annotations

import dataclasses
from typing import Any


def reproduce_config(recipe: Any, cfg: Any, quick: bool) -> Any:
    """The config a reproduce run uses: ``cfg`` itself when ``quick``; otherwise the ``full``
    preset applied to every field the caller left at its tiny default (explicit overrides win)."""
    if quick:
        return cfg
    tiny = type(cfg)()
    full = recipe.presets.get("full", {})
    over = {k: v for k, v in full.items() if getattr(cfg, k) == getattr(tiny, k)}
    return dataclasses.replace(cfg, **over)
