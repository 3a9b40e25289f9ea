"""Registered recipes of invariance-control (configs, recipes and reproduce experiments).

Importing this package imports every recipe module in it, which registers the methods. Module names
starting with ``_`` (work in progress) are skipped.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
