"""Connect to Ray, configure every worker process of the job, and size a worker group
from ResourceConfig. Shared by training, tuning and serving (none of them owns Ray)."""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Any

# GPUs per SageMaker instance type, for the families used with these algorithms.
GPUS_PER_INSTANCE = {
    "ml.p2.xlarge": 1, "ml.p2.8xlarge": 8, "ml.p2.16xlarge": 16,
    "ml.p3.2xlarge": 1, "ml.p3.8xlarge": 4, "ml.p3.16xlarge": 8, "ml.p3dn.24xlarge": 8,
    "ml.g4dn.xlarge": 1, "ml.g4dn.2xlarge": 1, "ml.g4dn.4xlarge": 1, "ml.g4dn.8xlarge": 1,
    "ml.g4dn.12xlarge": 4, "ml.g4dn.16xlarge": 1,
    "ml.g5.xlarge": 1, "ml.g5.2xlarge": 1, "ml.g5.4xlarge": 1, "ml.g5.8xlarge": 1, "ml.g5.16xlarge": 1,
    "ml.g5.12xlarge": 4, "ml.g5.24xlarge": 4, "ml.g5.48xlarge": 8,
    "ml.p4d.24xlarge": 8, "ml.p4de.24xlarge": 8, "ml.p5.48xlarge": 8,
}

# Ray runs this in every worker process of a raysight job (Train workers, Ray Data's
# SplitCoordinator actors, Serve replicas), before any task.
SETUP_HOOK = "raysight.cluster.setup_worker"


def setup_worker() -> None:
    """Ray Data's scheduling mends in this process (workarounds.py), Serve's gRPC servers on
    loopback when Ray is (ray_compat), and a bad-data fault kept off its console
    (errors.HideDataFaults)."""
    from raysight import ray_compat, workarounds

    workarounds.install()
    ray_compat.serve_grpc_on_loopback()
    _hide_data_faults_on_the_console()


def _hide_data_faults_on_the_console() -> None:
    import logging

    import ray.data  # noqa: F401 - configures the "ray.data" logger's handlers

    from raysight.errors import HideDataFaults

    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler) \
                and not any(isinstance(f, HideDataFaults) for f in handler.filters):
            handler.addFilter(HideDataFaults())


def local_cpus() -> int:
    """Logical CPUs for a local Ray: more than the cores, so Train workers (1 CPU
    each) never take every CPU and starve Ray Data, which would hang the job."""
    return max(8, 2 * (os.cpu_count() or 1))


# How long a Train run waits for its workers' resources (Ray's default: 60 s, then it fails).
# A tuning job's trials queue for them instead (tune/job.py sets it).
WORKER_GROUP_START_TIMEOUT = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"


def runtime_env() -> dict[str, Any]:
    """What every worker of this job needs: the S3 endpoint settings (never credentials),
    the algorithm plugins (their setting, and their code when it is not installed) and
    the setup hook."""
    from raysight import algorithms, storage

    from raysight import ray_compat

    env_vars = storage.worker_env()
    for name in (algorithms.PLUGINS_ENV, WORKER_GROUP_START_TIMEOUT):
        if os.environ.get(name):
            env_vars[name] = os.environ[name]
    if ray_compat.loopback_mode():  # torch.distributed's sockets on loopback too (ray_compat.torch_config)
        env_vars.update(ray_compat.LOOPBACK_INTERFACE_ENV)
    out: dict[str, Any] = {"worker_process_setup_hook": SETUP_HOOK}
    if env_vars:
        out["env_vars"] = env_vars
    modules = algorithms.plugin_modules_to_ship()
    if modules:
        out["py_modules"] = modules
    return out


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set, else start a Ray of this process's own (never one it
    finds running on the machine: Ray's `address="local"`), listening on loopback only.
    Either way every worker process of the job runs `setup_worker`, and so does this one
    (it plans datasets)."""
    import ray

    from raysight import ray_compat

    setup_worker()
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        if ray_compat.is_loopback_address(os.environ["RAY_ADDRESS"]):
            ray_compat.loopback_only()  # a local Ray bound to loopback (as ours are): join it as a local node
        ray.init(log_to_driver=True, runtime_env=runtime_env())
    else:
        ray_compat.loopback_only()
        ray.init(address="local", num_cpus=local_cpus(), log_to_driver=True, runtime_env=runtime_env())


def gpus_per_instance(instance_type: str) -> int:
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    match = re.match(r"ml\.(p\d|g\d)", instance_type)
    if match:
        warnings.warn(f"unknown GPU count for {instance_type}; assuming 1 GPU per instance")
        return 1
    return 0


@dataclass(frozen=True)
class Scaling:
    """A training job's worker group: Ray Train's ScalingConfig plus per-worker settings."""

    config: Any  # ray.train.ScalingConfig
    worker_batch_size: int
    torch_threads: int | None
    plan: str  # one line for the log


def scaling_for(instance_type: str, hosts: int, mini_batch_size: int) -> Scaling:
    """Hosts x GPUs of `instance_type` workers (one CPU worker per host without GPUs)."""
    import ray
    from ray.train import ScalingConfig

    gpus = gpus_per_instance(instance_type)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and cluster_gpus < 1:
        warnings.warn(f"{instance_type} asks for GPUs but the Ray cluster has none; training on CPU")
        gpus = 0
    workers = hosts * max(gpus, 1)
    worker_batch = max(1, mini_batch_size // max(gpus, 1))
    is_local = not os.environ.get("RAY_ADDRESS")
    threads = max(1, (os.cpu_count() or 1) // workers) if is_local and not gpus else None
    plan = (f"{workers} Ray Train worker(s) ({hosts} host(s) x {max(gpus, 1)} {'GPU' if gpus else 'CPU worker'}), "
            f"batch {worker_batch} per worker")
    return Scaling(ScalingConfig(num_workers=workers, use_gpu=bool(gpus), resources_per_worker={"CPU": 1}),
                   worker_batch, threads, plan)
