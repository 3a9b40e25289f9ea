"""Registered recipes of the geometry methods (config, ``Recipe``, reproduce experiment).

Every module in this folder whose name does not start with ``_`` is imported here, and importing
it registers its recipe, so ``invariance.core.list_methods("geometry")`` sees every method.
"""

from __future__ import annotations

import importlib
import pkgutil

__all__: list[str] = []

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")
        __all__.append(_info.name)
