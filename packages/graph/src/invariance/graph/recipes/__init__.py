"""The graph recipes: importing this package imports every recipe module in it, which registers
its methods. Modules whose name starts with ``_`` (work in progress, helpers) are skipped."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")
