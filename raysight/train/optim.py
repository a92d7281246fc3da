"""Optimizers and the step-wise LR schedule named by SageMaker's hyperparameters."""
from __future__ import annotations

import bisect
from typing import Any

import torch


def build_optimizer(hp: dict[str, Any], params) -> torch.optim.Optimizer:
    name, lr = hp["optimizer"], hp["learning_rate"]
    if name in ("sgd", "nag"):
        return torch.optim.SGD(params, lr=lr, momentum=hp["momentum"], weight_decay=hp["weight_decay"],
                               nesterov=name == "nag" and hp["momentum"] > 0)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(hp["beta_1"], hp["beta_2"]), eps=hp["eps"])
    if name == "rmsprop":
        # MXNet's RMSProp has no momentum by default and no weight decay for IC.
        return torch.optim.RMSprop(params, lr=lr, alpha=hp["gamma"], eps=hp["eps"],
                                   weight_decay=hp.get("rmsprop_weight_decay", 0.0))
    if name == "adadelta":
        return torch.optim.Adadelta(params, lr=lr, weight_decay=hp.get("weight_decay", 0.0))
    raise ValueError(f"unknown optimizer '{name}'")


def lr_multiplier(hp: dict[str, Any], step: int, steps_per_epoch: int) -> float:
    """factor ** (number of decay points passed); decay points = steps_per_epoch × epoch."""
    points = [steps_per_epoch * e for e in hp.get("lr_scheduler_step") or ()]
    return hp["lr_scheduler_factor"] ** bisect.bisect_right(points, step)
