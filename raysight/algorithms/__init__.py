"""Algorithm registry: name → Algorithm.

Every module in this package that calls `register` is imported on first use, so
a new algorithm is one new module here and no edits elsewhere.
"""
from __future__ import annotations

import importlib
import pkgutil

from raysight.algorithms.base import Algorithm

_REGISTRY: dict[str, Algorithm] = {}
_loaded = False


def register(algorithm: Algorithm) -> Algorithm:
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for module in pkgutil.iter_modules(__path__):
            if module.name != "base":
                importlib.import_module(f"{__name__}.{module.name}")
        _loaded = True


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Algorithm:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm '{name}'; available: {', '.join(sorted(_REGISTRY))}") from None
