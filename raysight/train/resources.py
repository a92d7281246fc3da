"""Connect to Ray and size the worker group from ResourceConfig."""
from __future__ import annotations

import os
import re
import warnings

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


def local_cpus() -> int:
    """Logical CPUs for a local Ray: more than the cores, so Train workers (1 CPU
    each) never take every CPU and starve Ray Data, which would hang the job."""
    return max(8, 2 * (os.cpu_count() or 1))


def ensure_ray() -> None:
    """Connect to RAY_ADDRESS when set, else start a local Ray."""
    import ray

    from raysight.storage import worker_env

    if ray.is_initialized():
        return
    runtime_env = {"env_vars": worker_env()} if worker_env() else None
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True, runtime_env=runtime_env)
    else:
        ray.init(num_cpus=local_cpus(), log_to_driver=True, runtime_env=runtime_env)


def gpus_per_instance(instance_type: str) -> int:
    if instance_type in GPUS_PER_INSTANCE:
        return GPUS_PER_INSTANCE[instance_type]
    match = re.match(r"ml\.(p\d|g\d)", instance_type)
    if match:
        warnings.warn(f"unknown GPU count for {instance_type}; assuming 1 GPU per instance")
        return 1
    return 0


def scaling_for(job, hp) -> tuple[dict, str]:
    """Ray Train ScalingConfig and per-worker settings for a job, plus a plan line."""
    import ray
    from ray.train import ScalingConfig

    hosts = job.instance_count
    gpus = gpus_per_instance(job.instance_type)
    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    if gpus and cluster_gpus < 1:
        warnings.warn(f"{job.instance_type} asks for GPUs but the Ray cluster has none; training on CPU")
        gpus = 0
    workers = hosts * max(gpus, 1)
    worker_batch = max(1, hp["mini_batch_size"] // max(gpus, 1))
    is_local = not os.environ.get("RAY_ADDRESS")
    threads = max(1, (os.cpu_count() or 1) // workers) if is_local and not gpus else None
    scaling = ScalingConfig(num_workers=workers, use_gpu=bool(gpus), resources_per_worker={"CPU": 1})
    plan = (f"{workers} Ray Train worker(s) ({hosts} host(s) x {max(gpus, 1)} {'GPU' if gpus else 'CPU worker'}), "
            f"batch {worker_batch} per worker")
    return {"scaling_config": scaling, "worker_batch_size": worker_batch, "torch_threads": threads}, plan
