"""raysight.workarounds: Ray Data scheduling mends, where they must take effect."""
import subprocess
import sys

from tests.conftest import ROOT

def test_every_worker_process_of_a_raysight_job_gets_the_mends(ray_cluster):
    """Ray runs cluster.setup_worker in every worker process (Train workers, Ray Data's
    SplitCoordinator actors, Serve replicas) before it runs anything else there; a
    fresh actor process checks what it finds before importing any raysight module."""
    import ray

    from raysight import workarounds

    @ray.remote(num_cpus=0)
    class Probe:
        def state(self):
            import sys

            from ray.data._internal.execution import streaming_executor_state as state
            from ray.data._internal.execution.resource_manager import ResourceManager

            mended = getattr(ResourceManager.get_global_limits, "_raysight", False)
            return (mended, state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S), "raysight.data" in sys.modules

    probe = Probe.remote()
    (mended, wait), imported_data = ray.get(probe.state.remote())
    ray.kill(probe)
    assert mended and wait == workarounds.TASK_COMPLETION_WAIT_S
    assert not imported_data  # installed by the hook, not as a side effect of an import


def test_importing_raysight_data_installs_nothing():
    code = ("import raysight.data, raysight.algorithms as a; a.names(); "
            "from ray.data._internal.execution.resource_manager import ResourceManager as R; "
            "print(getattr(R.get_global_limits, '_raysight', False))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False"]


def test_a_new_execution_runs_tasks_side_by_side_from_its_start(ray_cluster):
    """Without the mend, Ray Data runs one task at a time for the first second of every
    execution (its CPU limit is still unknown): three 0.25 s tasks never overlapped. Measured
    in a new driver process, as `raysight train` is one (cluster.ensure_ray joins the cluster
    and installs the mends there), beside the control run below."""
    code = ("from raysight import cluster; cluster.ensure_ray(); "
            "from tests.test_workarounds import overlaps; print(overlaps())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=180, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert int(proc.stdout.split()[-1]) >= 1, proc.stdout[-500:]


def overlaps() -> int:
    """How many of three 0.25 s tasks of a new execution ran beside another."""
    import time

    import numpy as np
    import ray.data

    def timed(batch):
        start = time.time()
        time.sleep(0.25)
        return {"start": np.array([start]), "end": np.array([time.time()])}

    ds = ray.data.range(3, override_num_blocks=3).map_batches(timed, batch_size=None)
    ds.materialize()  # first run starts the worker processes
    spans = sorted((r["start"], r["end"]) for r in ds.take_all())
    return sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])


def test_without_the_mend_a_new_execution_runs_one_task_at_a_time(ray_cluster):
    """The control run: the same measurement in a driver without raysight's mends (a plain
    `ray.init()` on the same cluster). Should Ray fix its delay, this fails: drop the mend."""
    code = "import ray; ray.init(); from tests.test_workarounds import overlaps; print(overlaps())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=180, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-1] == "0", proc.stdout[-500:]
