"""Algorithm registry: name → Algorithm, for the built-ins and for plugins.

Built-ins are the modules of this package; each calls `register`. Plugins are
algorithms of your own, found in two places, in every process that asks for an
algorithm (the CLI, Ray Train workers, Serve replicas):

- `RAYSIGHT_ALGORITHMS`: comma-separated module paths, imported here (each module
  calls `register`). `raysight.cluster` hands the setting to every Ray worker of the
  job, with the modules' code when they are not installed packages.
- the entry-point group `raysight.algorithms` of installed distributions: each entry
  names a module that calls `register`, or an `Algorithm` instance.
"""
from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import sysconfig
from types import ModuleType

from raysight.algorithms.base import Algorithm

PLUGINS_ENV = "RAYSIGHT_ALGORITHMS"
ENTRY_POINTS = "raysight.algorithms"

_REGISTRY: dict[str, Algorithm] = {}
_loaded = False


def register(algorithm: Algorithm) -> Algorithm:
    """Add an algorithm; its contract is checked here, so a broken plugin fails on import
    in the CLI, not with a KeyError inside a Ray worker."""
    algorithm.check_contract()
    _REGISTRY[algorithm.name] = algorithm
    return algorithm


def plugin_module_names() -> list[str]:
    return [m.strip() for m in os.environ.get(PLUGINS_ENV, "").split(",") if m.strip()]


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules(__path__):
        if module.name not in ("base", "rows"):  # the contract, not algorithms
            importlib.import_module(f"{__name__}.{module.name}")
    from importlib.metadata import entry_points

    for entry in entry_points(group=ENTRY_POINTS):
        loaded = entry.load()
        if isinstance(loaded, Algorithm):
            register(loaded)
    for name in plugin_module_names():
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ImportError(f"{PLUGINS_ENV} names module '{name}', which cannot be imported: {exc}") from exc


def plugin_modules_to_ship() -> list[ModuleType]:
    """The top-level packages of `RAYSIGHT_ALGORITHMS` modules that are not installed
    (not under site-packages): Ray ships them to every worker (runtime_env py_modules)."""
    _load_all()
    installed = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    out = []
    for name in plugin_module_names():
        top = sys.modules[name.split(".")[0]]
        where = getattr(top, "__file__", None) or next(iter(getattr(top, "__path__", [])), "")
        if where and not any(os.path.abspath(where).startswith(p) for p in installed) and top not in out:
            out.append(top)
    return out


def names() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def get(name: str) -> Algorithm:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown algorithm '{name}'; available: {', '.join(sorted(_REGISTRY))}") from None


def load_model(uri: str):
    """(algorithm, model in eval mode on CPU, metadata) from a model.tar.gz."""
    import tempfile

    from raysight import artifacts

    with tempfile.TemporaryDirectory() as tmp:
        meta = artifacts.extract(uri, tmp)
        algo = get(meta["algorithm"])
        model = algo.build_model(meta["hyperparameters"])
        model.load_state_dict(artifacts.load_params(tmp, meta))
    return algo, model.eval(), meta
