"""A third algorithm, written outside raysight/ as a user would: is a digit 5 or more?

It supplies only what the contract asks (raysight/algorithms/base.py): rows beyond the
shared ones, `.lst` index rows, a decode step, a network with one output, a criterion,
a meter and a predictor's answer. Registered through RAYSIGHT_ALGORITHMS=digit_is_high.
"""
from __future__ import annotations

import numpy as np

from raysight import data
from raysight.algorithms import base, register
from raysight.errors import ClientError
from raysight.formats import class_id_problem
from raysight.hyperparams import Param


def high(label) -> float:
    return float(float(label[0]) >= 5)


class Decode(base.Decode):
    def __init__(self, hp, training, cache=None):
        super().__init__(hp, training, cache)
        self.height = self.width = hp["side"]
        self.deterministic = True
        self.row_bytes = self.height * self.width * 3 + 16

    def record_label(self, label, where):
        problem = class_id_problem(label[:1].tolist(), where, 10)
        if problem:
            raise ClientError(problem)
        return label

    def decode_one(self, image, label, where, rng):
        return np.asarray(image.resize((self.width, self.height))), high(label)

    def collate(self, labels):
        return np.asarray(labels, dtype=np.float32)


class HitsMeter(base.SumMeter):
    def __init__(self, split):
        super().__init__()
        self.split = split

    def row(self, outputs, batch, terms):
        return [((outputs[:, 0] > 0).float() == batch["label"]).sum(), float(len(batch["label"]))]

    def finish(self, sums):
        return {f"{self.split}:accuracy": sums[0] / sums[1] if sums[1] else 0.0}


class Answer(base.Predictor):
    def answer(self, output, size):
        import torch

        return {"high": round(float(torch.sigmoid(output[0])), 6)}

    def custom_attributes(self, attributes):
        """Echoes the request's X-Amzn-SageMaker-Custom-Attributes, as a custom container may."""
        return f"seen={attributes}" if attributes else None


class DigitIsHigh(base.Algorithm):
    name = "digit-is-high"
    hyperparameters = base.with_rows([p for p in base.shared_rows() if p.name != "num_classes"], [
        Param("side", "int", 16, min=8, doc="Images are resized to side x side."),
        Param("channels", "int", 16, min=1, doc="Width of the little network."),
    ])
    objective = "validation:accuracy"
    tuning_metrics = ("validation:accuracy",)
    artifact_prefix = "digit-is-high"
    image_index_channels = ("train_lst", "validation_lst")
    decoder = Decode

    def input_shape(self, hp):
        return (3, hp["side"], hp["side"])

    def build_model(self, hp):
        from torch import nn

        c = hp["channels"]
        return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1),
                             nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * c * (hp["side"] // 2) ** 2, 1))

    def index_rows(self, image_channel, index_channel, hp):
        return data.lst_rows(image_channel, index_channel, lambda labels, where: class_id_problem(labels, where, 10))

    def criterion(self, hp, state, model):
        import torch.nn.functional as F

        return lambda outputs, batch: (F.binary_cross_entropy_with_logits(outputs[:, 0], batch["label"]), {})

    def meter(self, hp, split, model):
        return HitsMeter(split)

    def predictor(self, model, meta):
        return Answer(model, meta, self.input_shape(meta["hyperparameters"]))


register(DigitIsHigh())
