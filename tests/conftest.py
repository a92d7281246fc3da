"""Shared fixtures: one real local Ray per test session, tiny real data sets."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys

import pytest

from raysight.sample_data import digits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Small, fast settings for tests: 8x8 digits, ResNet-20, a few epochs.
TINY_HP = {"image_shape": "3,8,8", "resize": "9", "epochs": "3", "mini_batch_size": "16",
           "lr_scheduler_step": "", "learning_rate": "0.05"}


BUCKET = "raysight-test"


@pytest.fixture(scope="session")
def s3():
    """A real S3 endpoint on loopback (moto's server), reached through the standard AWS
    variables, set before Ray starts so every Ray worker inherits them."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    yield client
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def upload_tree(client, local_root: str, prefix: str) -> str:
    for dirpath, _, files in os.walk(local_root):
        for name in files:
            path = os.path.join(dirpath, name)
            key = prefix + "/" + os.path.relpath(path, local_root).replace(os.sep, "/")
            client.upload_file(path, BUCKET, key)
    return f"s3://{BUCKET}/{prefix}"


@pytest.fixture(scope="session")
def ray_cluster(s3):
    """One real local Ray for the session; subprocesses join it through RAY_ADDRESS."""
    import ray

    from raysight.cluster import ensure_ray

    assert not os.environ.get("RAY_ADDRESS")
    ensure_ray()  # a local Ray, as `raysight train` starts one (setup hook included)
    address = ray.get_runtime_context().gcs_address
    os.environ["RAY_ADDRESS"] = address
    yield address
    os.environ.pop("RAY_ADDRESS", None)
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_small(tmp_path_factory):
    """The first 240 training and 120 validation digits as PNG + .lst."""
    root = str(tmp_path_factory.mktemp("digits"))
    counts = digits.export(root, limit=240)
    return root, counts


def tiny_request(root: str, output: str, name: str, counts: dict, **overrides) -> dict:
    return digits.training_request(root, output, name=name, counts=counts, **{**TINY_HP, **overrides})


def run_cli(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raysight", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=ROOT)


def write_json(path, data) -> str:
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_job(request: dict):
    """A CreateTrainingJob request parsed against the registered algorithms."""
    from raysight import algorithms
    from raysight.job_request import parse_training_job

    return parse_training_job(request, algorithms.names())
