"""Optimizers and the step-wise LR schedule named by SageMaker's hyperparameters."""
from __future__ import annotations

import bisect
from typing import Any

import torch


def build_optimizer(hp: dict[str, Any], params, decayed: tuple[str, ...] = ("sgd", "nag")) -> torch.optim.Optimizer:
    """`decayed`: the optimizers the algorithm applies weight_decay to (IC: sgd, nag;
    OD: sgd, rmsprop). Settings an algorithm does not expose keep MXNet's defaults."""
    name, lr = hp["optimizer"], hp["learning_rate"]
    decay = hp.get("weight_decay", 0.0) if name in decayed else 0.0
    if name in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=decay,
                               nesterov=name == "nag" and hp["momentum"] > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(hp.get("beta_1", 0.9), hp.get("beta_2", 0.999)),
                                eps=hp.get("eps", 1e-8), weight_decay=decay)
    if name == "rmsprop":  # MXNet's RMSProp: no momentum by default
        return torch.optim.RMSprop(params, lr=lr, alpha=hp.get("gamma", 0.9), eps=hp.get("eps", 1e-8),
                                   weight_decay=decay)
    if name == "adadelta":  # MXNet's AdaDelta defaults: rho 0.9, epsilon 1e-5
        return torch.optim.Adadelta(params, lr=lr, rho=0.9, eps=1e-5, weight_decay=decay)
    raise ValueError(f"unknown optimizer '{name}'")


def lr_multiplier(hp: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """factor ** (number of decay points passed); decay points = steps_per_epoch × epoch."""
    points = [steps_per_epoch * e for e in hp.get("lr_scheduler_step") or ()]
    return hp["lr_scheduler_factor"] ** bisect.bisect_right(points, step)
