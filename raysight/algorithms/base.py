"""What an algorithm declares. Everything not listed here is shared code."""
from __future__ import annotations

from typing import Any

from raysight.hyperparams import Param


class Algorithm:
    """One built-in algorithm: hyperparameter schema, model builder, data adapter,
    loss and metrics, predictor. Subclasses override the methods below."""

    name: str = ""
    hyperparameters: list[Param] = []
    objective: str = ""  # the tuning objective, e.g. "validation:accuracy"
    tuning_metrics: tuple[str, ...] = ()  # metrics a tuning job may optimise
    artifact_prefix: str = ""  # params file prefix inside model.tar.gz

    # -- request -----------------------------------------------------------------
    def check(self, hp: dict[str, Any], job) -> list[str]:
        """Cross-field and channel problems (each a message); [] when fine."""
        return []

    # -- model --------------------------------------------------------------------
    def input_shape(self, hp: dict[str, Any]) -> tuple[int, int, int]:
        """(C, H, W) the network sees."""
        raise NotImplementedError

    def build_model(self, hp: dict[str, Any]):
        raise NotImplementedError

    # -- data ---------------------------------------------------------------------
    def datasets(self, job, hp: dict[str, Any], shards: int = 1) -> dict[str, Any]:
        """Ray Data datasets keyed "train" / "validation", validated and lazily decoded.
        A ShardedByS3Key train channel gives a list of `shards` datasets, one per worker,
        each holding its own objects."""
        raise NotImplementedError

    def prepare_batch(self, batch: dict, hp: dict[str, Any], training: bool) -> dict:
        """Last per-batch step on the device (e.g. uint8 NHWC → normalised NCHW)."""
        return batch

    # -- loss and metrics ---------------------------------------------------------
    def loss(self, outputs, batch: dict, hp: dict[str, Any]):
        raise NotImplementedError

    def meter(self, hp: dict[str, Any], split: str):
        """An object with update(outputs, batch), local() -> running values on this
        worker (for progress lines) and compute() -> {metric: value}, which reduces
        across workers so every sample counts once."""
        raise NotImplementedError

    def log_epoch(self, epoch: int, metrics: dict[str, float], seconds: float) -> list[str]:
        """SageMaker-format log lines for one finished epoch."""
        return []

    # -- serving ------------------------------------------------------------------
    def predictor(self, model, meta: dict[str, Any]):
        """An object with predict(body, content_type, accept) -> (status, body, content_type)."""
        raise NotImplementedError
