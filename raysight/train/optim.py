"""Optimizers and the step-wise LR schedule named by SageMaker's hyperparameters."""
from __future__ import annotations

import bisect
from typing import Any

import torch

from raysight.algorithms.base import setting


def build_optimizer(hp: dict[str, Any], params, decayed: tuple[str, ...] = ("sgd", "nag")) -> torch.optim.Optimizer:
    """`decayed`: the optimizers the algorithm applies weight_decay to (IC: sgd, nag;
    OD: sgd, rmsprop). Settings an algorithm does not expose keep MXNet's defaults."""
    name, lr = hp["optimizer"], hp["learning_rate"]
    decay = hp["weight_decay"] if name in decayed else 0.0
    if name in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=decay,
                               nesterov=name == "nag" and hp["momentum"] > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(setting(hp, "beta_1"), setting(hp, "beta_2")),
                                eps=setting(hp, "eps"), weight_decay=decay)
    if name == "rmsprop":  # MXNet's RMSProp: no momentum by default
        return torch.optim.RMSprop(params, lr=lr, alpha=setting(hp, "gamma"), eps=setting(hp, "eps"),
                                   weight_decay=decay)
    if name == "adadelta":  # MXNet's AdaDelta defaults: rho 0.9, epsilon 1e-5
        return torch.optim.Adadelta(params, lr=lr, rho=0.9, eps=1e-5, weight_decay=decay)
    raise ValueError(f"unknown optimizer '{name}'")


def lr_multiplier(hp: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """factor ** (number of decay points passed); decay points = steps_per_epoch × epoch."""
    points = [steps_per_epoch * e for e in hp["lr_scheduler_step"] or ()]
    return hp["lr_scheduler_factor"] ** bisect.bisect_right(points, step)
