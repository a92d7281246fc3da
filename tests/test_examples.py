"""The shipped example requests and configs stay valid as the code changes."""
import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from raysight.train import driver
from raysight.tune import parse_tuning_job
from tests.conftest import ROOT, free_port


def test_example_training_requests_validate():
    paths = [p for p in glob.glob(os.path.join(ROOT, "jobs", "*.json")) if "tuning" not in os.path.basename(p)]
    assert len(paths) >= 2
    for path in paths:
        with open(path) as f:
            job, algo, hp = driver.prepare(json.load(f))
        assert algo.name == ("object-detection" if "object-detection" in path else "image-classification")


def test_example_tuning_request_validates():
    paths = glob.glob(os.path.join(ROOT, "jobs", "tuning-*.json"))
    assert len(paths) >= 2  # one per algorithm; an empty glob must not pass
    for path in paths:
        with open(path) as f:
            tuning = parse_tuning_job(json.load(f))
        assert set(tuning["space"]) == {"learning_rate", "mini_batch_size"}


def test_serve_config_matches_serves_schema_and_builder():
    from ray.serve.schema import ServeDeploySchema

    from raysight.serve.app import build

    for name in ("image_classification.yaml", "object_detection.yaml"):
        with open(os.path.join(ROOT, "serve_configs", name)) as f:
            config = yaml.safe_load(f)
        schema = ServeDeploySchema.model_validate(config)
        app = schema.applications[0]
        assert app.import_path == "raysight.serve.app:build" and app.route_prefix == "/"
        assert callable(build) and "model" in app.args


def test_cluster_yaml_is_an_autoscaler_config():
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        config = yaml.safe_load(f)
    assert config["head_node_type"] in config["available_node_types"]
    assert "raysight" in " ".join(config["setup_commands"])


@pytest.mark.slow
def test_serve_run_with_the_shipped_config_answers_a_request(ray_cluster, tmp_path):
    """`serve run serve_configs/image_classification.yaml`, as the README says, with only the
    model path and port changed, on the shared Ray: /ping, then one image answered."""
    from ray import serve

    from tests.test_serve import encode, make_model, ping, post

    with open(os.path.join(ROOT, "serve_configs", "image_classification.yaml")) as f:
        config = yaml.safe_load(f)
    port = free_port()
    config["http_options"].update(host="127.0.0.1", port=port)
    config["applications"][0]["args"]["model"] = make_model(tmp_path / "model.tar.gz")
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "serve"), "run", str(path)],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 240
        while ping(port) != 200 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert ping(port) == 200, (tmp_path / "serve.log").read_text()[-3000:]
        status, content_type, body = post(port, encode("PNG"), "image/png")
        assert status == 200 and content_type == "application/json"
        probabilities = json.loads(body)
        assert len(probabilities) == 4 and abs(sum(probabilities) - 1) < 1e-4
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
        serve.shutdown()
