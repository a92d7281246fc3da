"""How datasets reach Train workers."""
from __future__ import annotations

from ray.train import DataConfig


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
        exact = {k: v for k, v in datasets.items() if k == "validation"}
        rest = {k: v for k, v in datasets.items() if k != "validation"}
        output = super().configure(rest, world_size, worker_handles, worker_node_ids, **kwargs)
        for name, ds in exact.items():
            if ds.name is None:
                ds.set_name(name)
            ds = ds.copy(ds)
            ds.context.execution_options = self._resolve_execution_options(name)
            hints = worker_node_ids if self._enable_shard_locality else None
            for i, split in enumerate(ds.streaming_split(world_size, equal=False, locality_hints=hints)):
                output[i][name] = split
        return output
