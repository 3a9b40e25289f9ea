"""Old import paths of names that moved from a method module to its recipe module (private)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable


def moved_to_recipe(module: str, recipe: str, names: Iterable[str]) -> Callable[[str], object]:
    """A module-level ``__getattr__`` for ``module`` that keeps ``from <module> import <name>``
    working for the ``names`` now defined in ``invariance.causal.recipes.<recipe>`` (imported on
    first use, so the method module does not import its recipe)."""
    moved = frozenset(names)

    def __getattr__(name: str) -> object:
        if name in moved:
            return getattr(importlib.import_module(f"invariance.causal.recipes.{recipe}"), name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
