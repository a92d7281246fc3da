"""What an algorithm declares. Everything not listed here is shared code."""
from __future__ import annotations

from typing import Any

from raysight.hyperparams import Param

IMAGE_TYPES = ("application/x-image", "image/jpeg", "image/png")
RECORDIO = "application/x-recordio"


def warn_if_async(hp: dict[str, Any]) -> None:
    """kv_store=dist_async is accepted (SageMaker's value) but cannot be honoured."""
    if hp.get("kv_store") == "dist_async":
        import warnings

        warnings.warn("kv_store=dist_async runs synchronously: PyTorch DDP has no asynchronous parameter server",
                      stacklevel=3)


class Algorithm:
    """One built-in algorithm: hyperparameter schema, model builder, data adapter,
    loss and metrics, predictor. Subclasses override the methods below."""

    name: str = ""
    hyperparameters: list[Param] = []
    objective: str = ""  # the tuning objective, e.g. "validation:accuracy"
    tuning_metrics: tuple[str, ...] = ()  # metrics a tuning job may optimise
    artifact_prefix: str = ""  # params file prefix inside model.tar.gz
    weight_decay_optimizers: tuple[str, ...] = ("sgd", "nag")  # where weight_decay applies
    log_every_batches: int = 20  # how often log_batch lines are written

    image_index_channels: tuple[str, ...] = ()  # what image content types need besides train/validation
    manifest_label: str = "label"  # what the second AttributeNames entry holds, for messages

    # -- request -----------------------------------------------------------------
    def check(self, hp: dict[str, Any], job) -> list[str]:
        """Cross-field and channel problems (each a message); [] when fine."""
        return self.channel_problems(job)

    def channel_problems(self, job) -> list[str]:
        """SageMaker's channel sets: train + validation as RecordIO, as augmented manifests,
        or as images plus `image_index_channels`; a `model` channel in File mode."""
        channels = job.channels
        problems = []
        if "model" in channels and channels["model"].input_mode != "File":
            problems.append("channel 'model' must use InputMode File")
        for split in ("train", "validation"):
            if split not in channels:
                return problems + [f"channel '{split}' is required (got: {', '.join(channels) or 'none'})"]
        manifests = [c for c in ("train", "validation") if channels[c].s3_data_type == "AugmentedManifestFile"]
        if manifests:
            problems += [f"channel '{c}' (AugmentedManifestFile) needs AttributeNames [image attribute, "
                         f"{self.manifest_label} attribute], got {channels[c].attribute_names}" for c in manifests
                         if len(channels[c].attribute_names) != 2]
            if len(manifests) == 1:
                problems.append("train and validation must both be augmented manifests")
            return problems
        mime = channels["train"].mime
        if mime in IMAGE_TYPES:
            missing = [c for c in self.image_index_channels if c not in channels]
            if missing:
                problems.append(f"content type '{mime}' needs channels "
                                f"{', '.join(('train', 'validation') + self.image_index_channels)}; "
                                f"missing {', '.join(missing)}")
        elif mime != RECORDIO:
            problems.append(f"channel 'train' content type '{channels['train'].content_type}' must be one of "
                            f"{', '.join(IMAGE_TYPES + (RECORDIO,))}")
        return problems

    @staticmethod
    def image_format(job) -> bool:
        """True for images + index channels (not RecordIO, not manifests)."""
        train = job.channels.get("train")
        return train is not None and train.s3_data_type != "AugmentedManifestFile" and train.mime in IMAGE_TYPES

    # -- model --------------------------------------------------------------------
    def input_shape(self, hp: dict[str, Any]) -> tuple[int, int, int]:
        """(C, H, W) the network sees."""
        raise NotImplementedError

    def build_model(self, hp: dict[str, Any]):
        raise NotImplementedError

    architecture_keys: tuple[str, ...] = ()  # must match for incremental training

    def pretrained_state(self, hp: dict[str, Any]):
        """The network's state dict with ImageNet backbone weights (use_pretrained_model=1)."""
        raise NotImplementedError

    def initial_state(self, job, hp: dict[str, Any]):
        """Starting weights: the `model` channel's (incremental training), else the
        pretrained backbone when asked, else None (random init). Checked in the driver,
        before any worker starts."""
        if "model" in job.channels:
            state = self._incremental_state(job.channels["model"], hp)
            try:  # a shape the architecture keys do not name (e.g. an SSD512 extra layer)
                self.build_model(hp).load_state_dict(state)
            except RuntimeError as exc:
                from raysight.errors import ClientError

                first = str(exc).strip().splitlines()
                raise ClientError(f"model channel {job.channels['model'].uri}: its weights do not fit the network "
                                  f"these hyperparameters build ({first[1].strip() if len(first) > 1 else first[0]})"
                                  ) from None
            return state
        if hp.get("use_pretrained_model"):
            return self.pretrained_state(hp)
        return None

    def _incremental_state(self, channel, hp):
        import os
        import tempfile

        import torch

        from raysight import artifacts, data
        from raysight.errors import ClientError

        uri = channel.uri if channel.uri.endswith(".tar.gz") else data.find_one(channel.uri, ".tar.gz", "model")
        with tempfile.TemporaryDirectory() as tmp:
            meta = artifacts.extract(uri, tmp)
            if meta.get("algorithm") != self.name:
                raise ClientError(f"model channel: {uri} holds a '{meta.get('algorithm')}' model, not {self.name}")
            old = meta["hyperparameters"]
            mismatched = [f"{k} is {_plain(old.get(k))} in the model but {_plain(hp.get(k))} in this job"
                          for k in self.architecture_keys if _plain(old.get(k)) != _plain(hp.get(k))]
            if mismatched:
                raise ClientError([f"model channel {uri}: {m}" for m in mismatched])
            return torch.load(os.path.join(tmp, meta["params"]), map_location="cpu", weights_only=True)

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

    def log_batch(self, epoch: int, batch: int, speed: float, running: dict[str, float]) -> list[str]:
        """Periodic progress lines inside an epoch (MXNet's Speedometer format by default)."""
        values = "\t".join(f"{k}={v:.6f}" for k, v in running.items())
        return [f"Epoch[{epoch}] Batch [{batch}]\tSpeed: {speed:.2f} samples/sec\t{values}"]

    def log_epoch(self, epoch: int, metrics: dict[str, float], seconds: float, hp: dict[str, Any]) -> list[str]:
        """SageMaker-format log lines for one finished epoch."""
        return []

    def preview(self, model, validation, hp: dict[str, Any]) -> tuple[str, bytes] | None:
        """(file name, PNG) showing the trained model on a few validation samples, or None."""
        return None

    # -- serving ------------------------------------------------------------------
    def predictor(self, model, meta: dict[str, Any]):
        """An object with predict(body, content_type, accept) -> (status, body, content_type)."""
        raise NotImplementedError


def _plain(value):
    """Hyperparameter values compare equal whatever JSON made of tuples."""
    return list(value) if isinstance(value, (list, tuple)) else value
