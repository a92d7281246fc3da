"""Where the API's jobs run: Ray Jobs on the cluster in RAY_ADDRESS, or on a local Ray that
`raysight api` starts detached (as `ray start --head` does) and records under `--state`, so
the cluster, and the jobs on it, outlive the API process and a restarted server finds them.
"""
from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

from raysight import ray_compat

# SageMaker gives an algorithm 120 s after SIGTERM to save its model; Ray Jobs' default is 3 s.
STOP_GRACE_S = 120
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _temp_dir(state: str) -> str:
    """Short, because Ray's socket paths under it must fit in 107 bytes."""
    return f"/tmp/raysight-api-{hashlib.sha1(os.path.abspath(state).encode()).hexdigest()[:10]}"


def _alive(dashboard: str) -> bool:
    try:
        with urllib.request.urlopen(f"{dashboard}/api/version", timeout=3) as response:
            return response.status == 200
    except urllib.error.HTTPError:
        return True  # it answers; with Ray's token authentication a bare request gets 401
    except OSError:
        return False


def local_cluster(state: str, echo=print) -> str:
    """The dashboard URL of this state folder's local Ray, started if it is not running."""
    ray_compat.enable_token_auth_as_ray_start_does()
    record = os.path.join(state, "cluster.json")
    if os.path.exists(record):
        dashboard = json.load(open(record))["dashboard"]
        if _alive(dashboard):
            echo(f"Using the local Ray cluster recorded in {record} ({dashboard})")
            return dashboard
    from raysight.cluster import local_cpus

    gcs, port = _free_port(), _free_port()
    # every port of its own: another Ray on this machine (a user's, a test's) holds the defaults
    ports = [f"--{name}={_free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port", "runtime-env-agent-port",
        "ray-client-server-port", "node-manager-port", "object-manager-port")]
    command = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={gcs}",
               f"--temp-dir={_temp_dir(state)}", "--dashboard-host=127.0.0.1", f"--dashboard-port={port}",
               *ports, f"--num-cpus={local_cpus()}", "--disable-usage-stats"]
    echo(f"Starting a local Ray cluster: {shlex.join(command[2:])}")
    # its own session: a signal to the API's process group does not reach the cluster
    subprocess.run(command, check=True, start_new_session=True, stdout=subprocess.DEVNULL,
                   env={**os.environ, "RAY_ADDRESS": "", **ray_compat.local_only_env()})
    dashboard = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while not _alive(dashboard):
        if time.time() > deadline:
            raise RuntimeError(f"the local Ray dashboard at {dashboard} did not answer in 60 s")
        time.sleep(0.5)
    with open(record, "w") as f:
        json.dump({"dashboard": dashboard, "gcs": f"127.0.0.1:{gcs}", "temp_dir": _temp_dir(state)}, f)
    return dashboard


def stop_local_cluster(state: str, echo=print) -> int:
    """`raysight api stop`: end this state folder's local Ray and everything on it, as
    `ray stop` would, but only the processes of this cluster (found by its temp dir)."""
    import ray  # noqa: F401 - puts Ray's bundled psutil on the path
    import psutil

    record = os.path.join(state, "cluster.json")
    if not os.path.exists(record):
        echo(f"No local Ray cluster is recorded in {state}")
        return 0
    temp_dir = json.load(open(record))["temp_dir"]
    procs = [p for p in psutil.process_iter(["cmdline"]) if any(temp_dir in a for a in p.info["cmdline"] or [])]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()
    os.remove(record)
    shutil.rmtree(temp_dir, ignore_errors=True)  # its sockets, logs and session files: this cluster's alone
    echo(f"Stopped the local Ray cluster of {state} ({len(procs)} processes)")
    return len(procs)


class Jobs:
    """The Ray Jobs client, reduced to what the API needs."""

    def __init__(self, dashboard: str | None):
        from ray.job_submission import JobSubmissionClient

        # RAY_ADDRESS, when set, wins inside JobSubmissionClient; without it the local cluster's URL
        self.client = JobSubmissionClient(dashboard)

    def submit(self, submission_id: str, argv: list[str], files: dict[str, str]) -> None:
        """Run `python -m raysight ARGV` as a Ray Job. `files` (name → text) travel in its
        working_dir, so the job's request reaches a remote cluster too."""
        import tempfile

        from raysight import storage

        folder = tempfile.mkdtemp(prefix="raysight-job-")
        for name, text in files.items():
            with open(os.path.join(folder, name), "w") as f:
                f.write(text)
        # the driver's own ray.init(runtime_env=...) repeats the S3 settings: let Ray merge the two
        env_vars = {**storage.worker_env(), "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_S), "PYTHONUNBUFFERED": "1",
                    "RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"}
        deadline = time.time() + 120
        try:
            while True:
                try:
                    self.client.submit_job(entrypoint=shlex.join([sys.executable, "-m", "raysight", *argv]),
                                           submission_id=submission_id,
                                           runtime_env={"working_dir": folder, "env_vars": env_vars})
                    return
                except RuntimeError as exc:
                    if "already exists" in str(exc):
                        return  # a resubmission after a crash finds the first: nothing to do
                    # a cluster just started answers before its job agent is up
                    if "No available agent" not in str(exc) or time.time() > deadline:
                        raise
                    time.sleep(1)
        finally:
            shutil.rmtree(folder, ignore_errors=True)  # Ray has uploaded it by now

    def submit_later(self, submission_id: str, argv: list[str], files: dict[str, str], done, failed) -> None:
        """`submit` in a thread; then `done()`, or `failed(exception)`."""
        def run():
            try:
                self.submit(submission_id, argv, files)
            except Exception as exc:  # noqa: BLE001 - recorded as the job's failure
                failed(exc)
            else:
                done()

        threading.Thread(target=run, name=f"submit-{submission_id}", daemon=True).start()

    def info(self, submission_id: str):
        """Ray's JobDetails, or None when the cluster does not know the job."""
        try:
            return self.client.get_job_info(submission_id)
        except RuntimeError as exc:
            if "does not exist" in str(exc) or "404" in str(exc):
                return None
            raise

    def status(self, row: dict) -> tuple[object, str]:
        """(JobDetails or None, 'PENDING'|'RUNNING'|'SUCCEEDED'|'FAILED'|'STOPPED'|'') of a job row."""
        info = self.info(row["submission_id"]) if row["submitted"] else None
        return info, str(getattr(info, "status", "") or "").split(".")[-1]

    def submitted(self, state, kind: str, name: str, submission_id: str) -> None:
        """Mark the row submitted; a stop asked for while the submission was on its way is sent now."""
        state.mark_submitted(kind, name)
        row = state.get(kind, name)
        if row and row["stop_requested"]:
            self.stop(submission_id)

    def stop(self, submission_id: str) -> None:
        try:
            self.client.stop_job(submission_id)
        except RuntimeError as exc:
            if "does not exist" not in str(exc):
                raise
            # not submitted yet: the stop is in the row, and `submitted` sends it on arrival

    def logs(self, submission_id: str) -> str:
        try:
            return self.client.get_job_logs(submission_id)
        except RuntimeError:
            return ""
