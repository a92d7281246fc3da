"""Endpoint settings: one dataclass behind `raysight serve`'s flags and the Serve config's
`args`, turned into Ray Serve deployment options. Defaults are measured on 2 cores
(benchmarks/serve.py, numbers in benchmarks/README.md)."""
from __future__ import annotations

import re
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any

from raysight.errors import ClientError

GPU_BATCH = 16
NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")  # InvokeEndpoint's EndpointName


@dataclass
class ServeOptions:
    name: str = "raysight"  # the EndpointName of /endpoints/{name}/invocations
    variant: str = "AllTraffic"  # x-Amzn-Invoked-Production-Variant
    max_batch_size: int = 0  # 0: GPU_BATCH on GPU replicas, 1 (batching off) on CPU ones; 1: off
    batch_wait_timeout_ms: float = 0.0  # 0: a batch is whatever queued while the last one ran
    timeout_s: float = 60.0  # SageMaker's limit on one /invocations answer
    replicas: int = 1
    min_replicas: int | None = None  # with max_replicas: Serve autoscaling
    max_replicas: int | None = None
    target_ongoing_requests: float = 8.0  # autoscaling: in-flight requests a replica aims at
    cpus_per_replica: float = 1.0  # also the replica's torch threads (rounded, at least 1)
    gpus_per_replica: float = 0.0  # fractional allowed; GPU replicas run in half precision
    multi_model: bool = False  # `model` is a prefix; X-Amzn-SageMaker-Target-Model picks a .tar.gz
    max_models_per_replica: int = 3  # multi-model: the LRU bound of loaded models per replica

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "ServeOptions":
        """From a Serve config's `args` (strings allowed, as `serve run app:build k=v` passes them)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(known) - {"model"})
        if unknown:
            raise ClientError(f"unknown endpoint setting(s) {unknown}; known: model, {', '.join(known)}")
        kinds = typing.get_type_hints(cls)
        values = {}
        for key, raw in args.items():
            if key == "model" or raw is None:
                continue
            kind = next(k for k in typing.get_args(kinds[key]) or (kinds[key],) if k is not type(None))
            if kind is bool and isinstance(raw, str):
                values[key] = raw.lower() in ("1", "true", "yes")
            else:
                try:
                    values[key] = kind(raw)
                except (TypeError, ValueError):
                    raise ClientError(f"endpoint setting {key}={raw!r} must be of type {kind.__name__}") from None
        opts = cls(**values)
        opts.check()
        return opts

    def check(self) -> None:
        problems = []
        if not NAME.match(self.name):
            problems.append(f"name '{self.name}' must match {NAME.pattern} (SageMaker's EndpointName)")
        if self.max_batch_size < 0:
            problems.append("max_batch_size must be ≥ 0 (0: 16 on GPU replicas and off on CPU; 1: off)")
        if self.batch_wait_timeout_ms < 0 or self.timeout_s <= 0:
            problems.append("batch_wait_timeout_ms must be ≥ 0 and timeout_s > 0")
        if (self.min_replicas is None) != (self.max_replicas is None):
            problems.append("give min_replicas and max_replicas together (autoscaling), or replicas alone")
        elif self.min_replicas is not None and not 0 <= self.min_replicas <= self.max_replicas:
            problems.append(f"need 0 ≤ min_replicas ≤ max_replicas, got {self.min_replicas}, {self.max_replicas}")
        if self.replicas < 1 or self.cpus_per_replica <= 0 or self.gpus_per_replica < 0:
            problems.append("replicas must be ≥ 1, cpus_per_replica > 0, gpus_per_replica ≥ 0")
        if self.max_models_per_replica < 1:
            problems.append("max_models_per_replica must be at least 1")
        if problems:
            raise ClientError("; ".join(problems))

    def batch_size(self) -> int:
        """Measured on 2 CPU cores (benchmarks/README.md), dynamic batching did not raise throughput
        (0.6-1.1x at concurrency 32): Ray Serve's own cost per request, not the forward pass, bounds
        a CPU replica. On a GPU a batch costs about what one image does, so GPU replicas batch."""
        return self.max_batch_size or (GPU_BATCH if self.gpus_per_replica else 1)

    def deployment(self) -> dict[str, Any]:
        """Ray Serve deployment options. max_ongoing_requests stays ≥ twice the batch size, so a
        replica can hold a full batch in its forward pass while the next one gathers."""
        actor = {"num_cpus": self.cpus_per_replica}
        if self.gpus_per_replica:
            actor["num_gpus"] = self.gpus_per_replica
        opts: dict[str, Any] = {"ray_actor_options": actor,
                                "max_ongoing_requests": max(64, 2 * self.batch_size()),
                                # SageMaker sends SIGKILL 30 s after SIGTERM: finish what is held by then
                                "graceful_shutdown_timeout_s": min(self.timeout_s, 25.0)}
        if self.min_replicas is not None:
            opts["autoscaling_config"] = {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                                          "target_ongoing_requests": self.target_ongoing_requests}
        else:
            opts["num_replicas"] = self.replicas
        return opts

    def as_args(self) -> dict[str, Any]:
        return asdict(self)
