"""Work-arounds for Ray behaviour that costs raysight real time, each measured.

Installed explicitly (idempotent) wherever a process plans or executes a dataset:
in every worker process of a raysight job by Ray's `worker_process_setup_hook`
(cluster.setup_worker: Train workers, SplitCoordinator actors, Serve replicas), in
the driver by `cluster.ensure_ray`, and by `data.py` before it plans a dataset.
"""
from __future__ import annotations

import functools


# How long Ray Data's scheduling loop may wait before it sees a finished task (Ray: 0.1 s).
TASK_COMPLETION_WAIT_S = 0.02


def install() -> None:
    """Both mends in this process; a second call changes nothing."""
    _data_limits_known_from_the_start()
    _data_notices_finished_tasks_sooner()


def _data_limits_known_from_the_start() -> None:
    """Ray Data (2.5x–2.60) learns the cluster's CPUs for a new execution from an
    asynchronous call to its autoscaling coordinator, and caches the first answer,
    still empty, for GLOBAL_LIMITS_UPDATE_INTERVAL_S (1 s). For that first second
    every operator has a zero budget and runs one task at a time. Each epoch is a
    new execution, so an epoch of a small channel ran at one task's speed: on 2 cores,
    1,500 images read + decoded in 1.2 s serially against 0.65 s on both cores
    (benchmarks/ingest.py). Asking again while the answer is still empty costs one
    `ray.wait(timeout=0)`: the coordinator client keeps one request in flight."""
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:  # a Ray without this module: nothing to mend
        return
    original = getattr(ResourceManager, "get_global_limits", None)
    if original is None or getattr(original, "_raysight", False):
        return

    @functools.wraps(original)
    def get_global_limits(self):
        limits = original(self)
        if not limits.cpu and not limits.gpu and hasattr(self, "_global_limits_last_update_time"):
            self._global_limits_last_update_time = 0  # not known yet: ask again next step
        return limits

    get_global_limits._raysight = True
    ResourceManager.get_global_limits = get_global_limits


def _data_notices_finished_tasks_sooner() -> None:
    """Ray Data's scheduling loop waits for *all* running tasks or 0.1 s, whichever
    comes first (`ray.wait(num_returns=len(active))`), so a finished task's slot stays
    idle for up to 0.1 s before the next task is dispatched: ray-project/ray#42377,
    open. Decode tasks of a few hundred images take 0.1–0.3 s on a small machine, so
    the loop now wakes every 0.02 s: 1,500 images 0.80 → 0.66 s on 2 cores, for about
    3% more of a core in the process that runs the loop (benchmarks/README.md)."""
    try:
        from ray.data._internal.execution import streaming_executor_state as state
    except ImportError:
        return
    current = getattr(state, "WAIT_FOR_TASK_COMPLETION_TIMEOUT_S", None)
    if isinstance(current, (int, float)) and current > TASK_COMPLETION_WAIT_S:
        state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S = TASK_COMPLETION_WAIT_S
