"""The method registry: frozen metadata per method, discovered across installed packages.

Each domain package registers its recipes at import time with :func:`register`; the umbrella command
and the generic tests find every installed package through the entry-point group
``invariance.methods`` (:func:`load_plugins`).
"""

from __future__ import annotations

import importlib
import logging
import warnings
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

__all__ = ["MethodInfo", "register", "get_method", "list_methods", "load_plugins", "domains"]

log = logging.getLogger(__name__)

_REGISTRY: dict[str, MethodInfo] = {}
_LOADED: set[str] = set()


@dataclass(frozen=True)
class MethodInfo:
    """Metadata of a registered method (frozen; ``recipe`` is the Recipe class)."""

    name: str
    domain: str
    paper: str
    authors: str
    year: int
    arxiv: str
    code_url: str
    symmetry: str
    baseline: str
    recipe: type = field(repr=False, compare=False, default=object)
    tags: tuple[str, ...] = ()

    @property
    def arxiv_url(self) -> str:
        return f"https://arxiv.org/abs/{self.arxiv}" if self.arxiv else ""


def register(
    name: str,
    *,
    domain: str,
    paper: str,
    authors: str = "",
    year: int = 0,
    arxiv: str = "",
    code_url: str = "",
    symmetry: str = "",
    baseline: str = "",
    tags: tuple[str, ...] | list[str] = (),
):
    """Class decorator registering a :class:`~invariance.core.recipe.Recipe` subclass."""
    if not name or name != name.lower() or " " in name:
        raise ValueError(f"method names are lowercase without spaces, got {name!r}")

    def deco(cls: type) -> type:
        from invariance.core.recipe import Recipe

        if not (isinstance(cls, type) and issubclass(cls, Recipe)):
            raise TypeError(f"@register({name!r}) expects a Recipe subclass, got {cls!r}")
        info = MethodInfo(
            name=name,
            domain=domain,
            paper=paper,
            authors=authors,
            year=int(year),
            arxiv=arxiv,
            code_url=code_url,
            symmetry=symmetry,
            baseline=baseline,
            recipe=cls,
            tags=tuple(tags),
        )
        old = _REGISTRY.get(name)
        if old is not None and old.recipe is not cls:
            if (old.recipe.__module__, old.recipe.__qualname__) != (
                cls.__module__,
                cls.__qualname__,
            ):
                warnings.warn(f"method {name!r} re-registered by {cls.__module__}", stacklevel=2)
        _REGISTRY[name] = info
        cls.info = info
        return cls

    return deco


def load_plugins(domain: str | None = None) -> list[str]:
    """Import every installed package of the ``invariance.methods`` entry-point group (or one
    domain). Returns the domains loaded; a package that fails to import is logged and skipped."""
    loaded = []
    for ep in entry_points(group="invariance.methods"):
        if domain is not None and ep.name != domain:
            continue
        if ep.name not in _LOADED:
            try:
                importlib.import_module(ep.value)
            except Exception as e:  # a broken optional package must not break the others
                log.warning("could not load invariance package %s: %s", ep.name, e)
                continue
            _LOADED.add(ep.name)
        loaded.append(ep.name)
    return loaded


def domains() -> list[str]:
    """Installed domains (entry points), sorted."""
    return sorted({ep.name for ep in entry_points(group="invariance.methods")})


def get_method(name: str) -> MethodInfo:
    """The registered method ``name`` (loads plugins if needed)."""
    if name not in _REGISTRY:
        load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown method {name!r}; registered: {known}") from None


def list_methods(domain: str | None = None, *, load: bool = True) -> list[MethodInfo]:
    """Registered methods (of one domain), sorted by domain then name."""
    if load:
        load_plugins(domain)
    out = [m for m in _REGISTRY.values() if domain is None or m.domain == domain]
    return sorted(out, key=lambda m: (m.domain, m.name))


def _clear_for_tests() -> dict[str, Any]:  # used by core's own tests only
    saved = dict(_REGISTRY)
    _REGISTRY.clear()
    return saved
