"""Hyperparameter rows every algorithm shares, and the names the shared runtime reads.

An algorithm's table is `with_rows(shared_rows(), its_own_rows)`; `register` checks
that RUNTIME_REQUIRED are all declared (algorithms/base.py, check_contract).
"""
from __future__ import annotations

from typing import Any

from raysight.hyperparams import Param, parse_epoch_list, unit

# Hyperparameters the shared runtime (train loop, optimizer, driver, tuning) reads:
# every algorithm declares these (shared_rows does) ...
RUNTIME_REQUIRED = ("num_training_samples", "epochs", "mini_batch_size", "optimizer",
                    "learning_rate", "momentum", "weight_decay", "lr_scheduler_step", "lr_scheduler_factor",
                    "early_stopping", "early_stopping_min_epochs", "early_stopping_patience",
                    "early_stopping_tolerance")
# ... and these it reads when an algorithm declares them, else uses these values.
RUNTIME_OPTIONAL = {"checkpoint_frequency": None, "precision_dtype": "float32", "use_pretrained_model": 0,
                    "beta_1": 0.9, "beta_2": 0.999, "eps": 1e-8, "gamma": 0.9}


def setting(hp: dict[str, Any], name: str) -> Any:
    """An optional runtime hyperparameter: the algorithm's value, or the runtime default."""
    return hp.get(name, RUNTIME_OPTIONAL[name])


def shared_rows() -> list[Param]:
    """SageMaker's rows common to its built-in algorithms, with Image Classification's
    values; an algorithm overrides a row by giving one of the same name (with_rows)."""
    return [
        Param("num_classes", "int", required=True, min=1, doc="Number of output classes."),
        Param("num_training_samples", "int", required=True, min=1, doc="Training set size; drives LR-step timing."),
        Param("early_stopping", "bool", False, doc="Stop when the objective stops improving."),
        Param("early_stopping_min_epochs", "int", 10, min=1, doc="Epochs before early stopping may trigger."),
        Param("early_stopping_patience", "int", 5, min=1, doc="Epochs without improvement before stopping."),
        unit("early_stopping_tolerance", 0.0, "Relative improvement that counts."),
        Param("epochs", "int", 30, min=1, doc="Training epochs."),
        Param("kv_store", "str", None, choices=("dist_sync", "dist_async"), doc="Multi-host sync mode."),
        unit("learning_rate", 0.1, "Initial learning rate.", "Continuous"),
        unit("lr_scheduler_factor", 0.1, "LR multiplier at each step epoch."),
        Param("lr_scheduler_step", "custom", (), parser=parse_epoch_list,
              doc="Epochs after which LR decays, '10, 20'."),
        Param("mini_batch_size", "int", 32, min=1, tunable="Integer", doc="Batch per host, split over its GPUs."),
        unit("momentum", 0.9, "Momentum for sgd and nag.", "Continuous"),
        Param("optimizer", "str", "sgd", choices=("sgd", "adam", "rmsprop", "nag"), tunable="Categorical",
              doc="Optimizer."),
        unit("weight_decay", 0.0001, "L2 coefficient for sgd and nag.", "Continuous"),
    ]


def with_rows(base: list[Param], own: list[Param]) -> list[Param]:
    """`base` with `own` rows replacing those of the same name and the rest added; required
    rows first, then by name, raysight's own extensions last (SageMaker's table order)."""
    rows = {p.name: p for p in base} | {p.name: p for p in own}
    return sorted(rows.values(), key=lambda p: (not p.required, p.name.startswith("raysight_"), p.name))


