"""The shipped example requests and configs stay valid as the code changes."""
import glob
import json
import os

import yaml

from raysight.train import driver
from raysight.tune import parse_tuning_job
from tests.conftest import ROOT


def test_example_training_requests_validate():
    paths = [p for p in glob.glob(os.path.join(ROOT, "jobs", "*.json"))
             if not os.path.basename(p).startswith(("tuning", "transform"))]
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


def test_example_transform_request_validates():
    from raysight.serve.codecs import EXECUTION_PARAMETERS
    from raysight.transform.request import parse

    paths = glob.glob(os.path.join(ROOT, "jobs", "transform-*.json"))
    assert paths
    for path in paths:
        with open(path) as f:
            job = parse(json.load(f), "model.tar.gz", EXECUTION_PARAMETERS)
        assert job.accept == "application/jsonlines" and job.concurrency == 2


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
        assert config["http_options"]["host"] == "127.0.0.1"  # loopback unless the user opens it (README "Security")


def test_cluster_yaml_is_an_autoscaler_config():
    with open(os.path.join(ROOT, "cluster.yaml")) as f:
        config = yaml.safe_load(f)
    assert config["head_node_type"] in config["available_node_types"]
    assert "raysight" in " ".join(config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head  # the dashboard runs code: not public
