"""raysight.workarounds: Ray Data scheduling mends, where they must take effect."""
import subprocess
import sys

from tests.conftest import ROOT

CHECK = r"""
import pickle, sys
from ray.data._internal.execution import streaming_executor_state as state
from ray.data._internal.execution.resource_manager import ResourceManager

def installed():
    return (getattr(ResourceManager.get_global_limits, "_raysight", False),
            state.WAIT_FOR_TASK_COMPLETION_TIMEOUT_S)

before = installed()
pickle.loads(sys.stdin.buffer.read())  # what a Train worker or SplitCoordinator gets with a dataset
print(before, installed())
"""


def test_every_process_that_receives_a_raysight_decode_op_gets_the_mends():
    import cloudpickle

    from raysight import algorithms, workarounds
    from raysight.algorithms.image_classification import Decode
    from raysight.hyperparams import parse_hyperparameters

    hp = parse_hyperparameters(algorithms.get("image-classification").hyperparameters,
                               {"num_classes": "2", "num_training_samples": "10"})
    proc = subprocess.run([sys.executable, "-c", CHECK], input=cloudpickle.dumps(Decode(hp, training=True)),
                          capture_output=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["(False,", "0.1)", "(True,", f"{workarounds.TASK_COMPLETION_WAIT_S})"]


def test_a_new_execution_runs_tasks_side_by_side_from_its_start(ray_cluster):
    """Without the mend, Ray Data runs one task at a time for the first second of every
    execution (its CPU limit is still unknown): three 0.25 s tasks never overlapped."""
    import time

    import numpy as np
    import ray.data

    from raysight import data  # noqa: F401 - installs the mends in this (the driver's) process

    def timed(batch):
        start = time.time()
        time.sleep(0.25)
        return {"start": np.array([start]), "end": np.array([time.time()])}

    ds = ray.data.range(3, override_num_blocks=3).map_batches(timed, batch_size=None)
    ds.materialize()  # first run starts the worker processes
    rows = ds.take_all()
    spans = sorted((r["start"], r["end"]) for r in rows)
    overlapping = sum(1 for a, b in zip(spans, spans[1:]) if b[0] < a[1])
    assert overlapping >= 1, spans
