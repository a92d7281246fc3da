"""A Ray of its own (issue 28, item 5): with another Ray running on the machine (a user's
`ray start --head`, or the detached one `raysight api` leaves), `raysight train`, `tune`,
`transform` and `serve` without RAY_ADDRESS each start and finish on a local Ray of their own,
listening on loopback only, and the other cluster sees none of their jobs."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error

import pytest

from tests.conftest import ROOT, free_port, tiny_request, write_json
from tests.test_security import beyond_loopback, listeners, tree
from tests.test_serve import ping
from tests.test_transform import transform_request
from tests.test_tune import tuning_request

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def other_ray():
    """A user's `ray start --head` on this machine, with Ray's default temp dir, so that it
    writes the current-cluster file through which a bare `ray.init()` would join it (ports of
    its own; stopped by its own process, not `ray stop`, which would end every Ray here)."""
    import ray  # noqa: F401 - Ray's bundled psutil
    import psutil

    gcs, dashboard_port = free_port(), free_port()
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")]
    proc = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={gcs}", f"--dashboard-port={dashboard_port}", "--dashboard-host=127.0.0.1",
                             *ports, "--num-cpus=1", "--disable-usage-stats"],
                            env={**os.environ, "RAY_ADDRESS": "", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    dashboard, current = f"http://127.0.0.1:{dashboard_port}", "/tmp/ray/ray_current_cluster"
    try:
        deadline = time.time() + 90
        # up once the dashboard answers (401 with Ray's token authentication) and Ray has written
        # the current-cluster file, which a bare ray.init() reads
        while not (answers(dashboard) and os.path.exists(current)
                   and open(current).read().strip() == f"127.0.0.1:{gcs}"):
            assert proc.poll() is None and time.time() < deadline, "ray start --head did not come up"
            time.sleep(0.5)
        yield {"dashboard": dashboard, "gcs": f"127.0.0.1:{gcs}"}
    finally:
        mine = [p for p in psutil.process_iter(["cmdline"]) if any(str(gcs) in a for a in p.info["cmdline"] or [])]
        proc.terminate()  # `ray start --block` stops its cluster on SIGTERM
        proc.wait(60)
        for p in mine:
            if p.is_running():
                p.kill()
        if os.path.exists(current) and open(current).read().strip() == f"127.0.0.1:{gcs}":
            os.remove(current)  # ours, and pointing at a cluster that is gone


def answers(url: str) -> bool:
    import urllib.request

    try:
        urllib.request.urlopen(url + "/api/version", timeout=3)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def jobs_seen_by(dashboard: str) -> list[str]:
    """Every job the other cluster knows: submitted ones and drivers that connected."""
    from ray.job_submission import JobSubmissionClient

    from raysight import ray_compat

    ray_compat.enable_token_auth_as_ray_start_does()  # `ray start` turned it on: send the token
    session_ray = os.environ.pop("RAY_ADDRESS", None)  # inside the client it would win over `dashboard`
    try:
        return [f"{j.type}:{j.entrypoint or j.job_id}" for j in JobSubmissionClient(dashboard).list_jobs()]
    finally:
        if session_ray is not None:
            os.environ["RAY_ADDRESS"] = session_ray


def run_watching_sockets(args, timeout=600, until=None):
    """Run `raysight ARGS` without RAY_ADDRESS; while it runs, note every listening socket of
    its process tree. `until(proc)`: stop waiting and SIGTERM it once true (for `serve`)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "raysight", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    seen: dict[str, set[str]] = {}
    deadline = time.time() + timeout
    try:
        while proc.poll() is None:
            assert time.time() < deadline, f"raysight {args[0]} did not finish in {timeout} s"
            for addr, names in listeners(tree(proc.pid)).items():
                seen.setdefault(addr, set()).update(names)
            if until is not None and until(seen):
                os.kill(proc.pid, signal.SIGTERM)
                until = None
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, proc.stdout.read(), seen


def test_each_command_runs_on_a_ray_of_its_own_beside_another_one(other_ray, digits_small, tmp_path):
    root, counts = digits_small
    # the control: a driver that does join the other cluster is seen there
    subprocess.run([sys.executable, "-c", "import ray; ray.init(); ray.shutdown()"], check=True, timeout=120,
                   env={**os.environ, "RAY_ADDRESS": other_ray["gcs"], "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
                        "RAY_AUTH_MODE": "token"},
                   capture_output=True)
    assert len(jobs_seen_by(other_ray["dashboard"])) == 1

    request = write_json(tmp_path / "train.json", tiny_request(root, str(tmp_path), "own-ray", counts, epochs="1"))
    code, out, seen = run_watching_sockets(["train", request])
    assert code == 0, out[-3000:]
    assert len(seen) >= 4 and not beyond_loopback(seen), beyond_loopback(seen) or seen
    model = str(tmp_path / "own-ray" / "output" / "model.tar.gz")

    images = os.path.join(root, "validation")
    transform = write_json(tmp_path / "t.json", transform_request("own-ray-t", images, str(tmp_path / "t-out")))
    code, out, seen = run_watching_sockets(["transform", transform, "--model", model])
    assert code == 0, out[-3000:]
    assert seen and not beyond_loopback(seen), beyond_loopback(seen)

    tuning = tuning_request(root, str(tmp_path / "tune"), counts,
                            ResourceLimits={"MaxNumberOfTrainingJobs": 1, "MaxParallelTrainingJobs": 1})
    tuning["TrainingJobDefinition"]["StaticHyperParameters"]["epochs"] = "1"
    code, out, seen = run_watching_sockets(["tune", write_json(tmp_path / "tune.json", tuning)])
    assert code == 0, out[-3000:]
    assert seen and not beyond_loopback(seen), beyond_loopback(seen)

    port = free_port()
    answered = []

    def ready(found):
        if f"127.0.0.1:{port}" in found and ping(port) == 200:
            answered.append(True)
            return True
        return False

    code, out, seen = run_watching_sockets(["serve", model, "--port", str(port)], until=ready)
    assert answered and code == 0, out[-3000:]
    assert not beyond_loopback(seen), beyond_loopback(seen)

    assert len(jobs_seen_by(other_ray["dashboard"])) == 1, jobs_seen_by(other_ray["dashboard"])  # only the control
