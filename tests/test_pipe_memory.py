"""Pipe mode keeps memory flat: a channel several times larger than Ray's object store
streams through it without spilling (own Ray instance with a small object store)."""
import pytest
import os
import subprocess
import sys

from raysight.formats import recordio
from tests.conftest import ROOT

STORE = 80 * 1024 * 1024
RECORD = 256 * 1024

SCRIPT = r"""
import json, re, sys, threading, time
import ray
from ray._private.internal_api import memory_summary
from raysight import data
from raysight.job_request import Channel

ray.init(address="local", num_cpus=2, object_store_memory=int(sys.argv[2]), include_dashboard=False)
stats = {"peak_mib": 0.0, "spilled_mib": 0.0, "samples": 0}
done, ready = threading.Event(), threading.Event()

address = ray.get_runtime_context().gcs_address  # this Ray, not another one on the machine

def poll():
    while not done.is_set():
        try:
            text = memory_summary(address=address, stats_only=True)
        except Exception as exc:
            stats["error"] = repr(exc)
            ready.set()
            return
        used = re.search(r"Plasma memory usage (\d+) MiB", text)
        spilled = re.search(r"Spilled (\d+) MiB", text)
        stats["peak_mib"] = max(stats["peak_mib"], float(used.group(1)) if used else 0.0)
        stats["spilled_mib"] = max(stats["spilled_mib"], float(spilled.group(1)) if spilled else 0.0)
        stats["samples"] += 1
        ready.set()
        time.sleep(0.1)

threading.Thread(target=poll, daemon=True).start()
ready.wait(60)  # the first summary call connects; start streaming once the poller is sampling
ds = data.recordio_dataset(Channel("train", sys.argv[1], "application/x-recordio", "Pipe"))
total = records = 0
for batch in ds.iter_batches(batch_size=8, batch_format="numpy"):
    records += len(batch["record"])
    total += sum(len(r) for r in batch["record"])
    time.sleep(0.02)  # a consumer slower than storage: the producer must wait, not pile up
done.set()
time.sleep(0.3)
print(json.dumps({"bytes": total, "records": records, **stats}))
"""


@pytest.mark.slow
def test_channel_larger_than_object_store_streams_without_spilling(tmp_path):
    channel = tmp_path / "train"
    channel.mkdir()
    n = (4 * STORE) // RECORD  # the channel is 4x the object store
    rng = os.urandom
    with open(channel / "big.rec", "wb") as f:
        recordio.write_records(f, (rng(RECORD) for _ in range(n)))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(channel), str(STORE)], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["records"] == n and result["bytes"] == n * RECORD  # every byte came through
    assert result["spilled_mib"] == 0, result
    # The evidence is the spill counter above: Ray counts spilled bytes cumulatively, so a backlog
    # that outgrew the store between two samples would still show there. The sampled peak only
    # shows the store in use (Ray Data's backpressure fills it to ~90% of its budget, 72 of 80 MiB
    # measured): it cannot exceed the store, so it proves nothing beyond that.
    assert result["samples"] >= 10 and result["peak_mib"] > 0  # the poller really watched the store in use
