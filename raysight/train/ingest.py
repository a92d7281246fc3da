"""How datasets reach Train workers."""
from __future__ import annotations

from ray.train import DataConfig


SHARD = "#"


def flatten(datasets: dict) -> dict:
    """{"train": [ds0, ds1]} (ShardedByS3Key) → {"train#0": ds0, "train#1": ds1}."""
    out = {}
    for name, ds in datasets.items():
        if isinstance(ds, list):
            out.update({f"{name}{SHARD}{i}": part for i, part in enumerate(ds)})
        else:
            out[name] = ds
    return out


def shard_name(name: str, rank: int, names) -> str:
    """The dataset a worker of `rank` reads for `name`."""
    own = f"{name}{SHARD}{rank}"
    return own if own in names else name


class ExactValidationDataConfig(DataConfig):
    """Split "train" equally (DDP needs the same batch count on every worker) and
    "validation" unequally, so every validation sample is scored exactly once
    (an equal split may drop rows to even the shares)."""

    def __init__(self, ordered: list[str] = (), **kwargs):
        """`ordered`: datasets whose row order must be reproducible (ShuffleConfig.Seed)."""
        options = {}
        for name in ordered:
            opts = DataConfig.default_ingest_options()
            opts.preserve_order = True
            options[name] = opts
        super().__init__(execution_options=options or None, **kwargs)

    def configure(self, datasets, world_size, worker_handles, worker_node_ids, **kwargs):
        if world_size == 1:  # nothing to split: the worker runs each dataset itself, as Ray does for
            return [{key: self._whole(key, ds) for key, ds in datasets.items()}]  # unsplit ones
        exact = {k: v for k, v in datasets.items() if k == "validation"}
        sharded = {k: v for k, v in datasets.items() if SHARD in k}
        rest = {k: v for k, v in datasets.items() if k != "validation" and SHARD not in k}
        output = super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs)
        for key, ds in sharded.items():  # "train#3" is worker 3's own share of "train"
            for rank in range(world_size):  # Ray Train wants every name on every rank; only
                output[rank][key] = self._whole(key, ds)  # rank `index` iterates this one (lazy)
        for name, ds in exact.items():
            hints = worker_node_ids if self._enable_shard_locality else None
            for i, split in enumerate(self._prepared(name, ds).streaming_split(world_size, equal=False,
                                                                                locality_hints=hints)):
                output[i][name] = split
        return output

    def _whole(self, key: str, ds):
        """An iterator over all of `ds`, run by the worker that iterates it (no
        SplitCoordinator actor: one process less competing for the CPU)."""
        return self._prepared(key, ds).iterator()

    def _prepared(self, key: str, ds):
        """A named copy of `ds` with its ingest options ("train#3" takes those of "train")."""
        name = key.split(SHARD)[0]
        if ds.name is None:
            ds.set_name(name)
        ds = ds.copy(ds)
        ds.context.execution_options = self._resolve_execution_options(name)
        return ds
