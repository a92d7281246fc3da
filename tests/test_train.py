"""`raysight train` end to end on real digits, through the CLI, on the shared Ray."""
import json
import os
import re
import tarfile

import pytest

from raysight import algorithms
from tests.conftest import run_cli, tiny_request, write_json


@pytest.fixture(scope="module")
def trained(ray_cluster, digits_small, tmp_path_factory):
    root, counts = digits_small
    out = tmp_path_factory.mktemp("out")
    request = write_json(out / "request.json", tiny_request(root, str(out), "tiny-job", counts, epochs="4", mini_batch_size="8"))
    proc = run_cli("train", request)
    return proc, out, request


@pytest.mark.slow
def test_job_completes_with_sagemaker_metric_lines(trained):
    proc, out, _ = trained
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    logs = proc.stdout + proc.stderr
    for epoch in range(4):
        assert re.search(rf"Epoch\[{epoch}\] Train-accuracy=[0-9.]+", logs)
        assert re.search(rf"Epoch\[{epoch}\] Validation-accuracy=[0-9.]+", logs)
        assert re.search(rf"Epoch\[{epoch}\] Time cost=[0-9.]+", logs)
        assert re.search(rf"Epoch\[{epoch}\] of which validation=[0-9.]+s, waiting for data=[0-9.]+s", logs)
    assert re.search(r"Epoch\[0\] Batch \[\d+\]\tSpeed: [0-9.]+ samples/sec\taccuracy=[0-9.]+", logs)
    assert "Storing the best model with validation accuracy:" in logs
    with open(out / "tiny-job" / "output" / "metrics.json") as f:
        history = json.load(f)
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    for h in history:  # where each epoch's time went (benchmarks attribute from these)
        assert 0 < h["validation_seconds"] < h["seconds"] and 0 <= h["data_wait_seconds"] < h["seconds"]


@pytest.mark.slow
def test_job_json_describes_the_job(trained):
    _, out, _ = trained
    with open(out / "tiny-job" / "output" / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobName"] == "tiny-job"
    assert job["TrainingJobStatus"] == "Completed" and job["SecondaryStatus"] == "Completed"
    assert job["TrainingJobArn"].endswith(":training-job/tiny-job")
    assert job["HyperParameters"]["num_layers"] == "20"
    assert job["ModelArtifacts"]["S3ModelArtifacts"] == str(out / "tiny-job" / "output" / "model.tar.gz")
    assert job["TrainingEndTime"] >= job["TrainingStartTime"] >= job["CreationTime"]
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert set(metrics) == {"train:accuracy", "validation:accuracy"}
    # 10 classes: chance is 0.1. Four epochs on 240 images reach well above it.
    assert metrics["validation:accuracy"] > 0.3


@pytest.mark.slow
def test_artifact_holds_what_serving_needs(trained):
    _, out, _ = trained
    path = out / "tiny-job" / "output" / "model.tar.gz"
    with tarfile.open(path) as tar:
        names = set(tar.getnames())
    meta_params = [n for n in names if n.endswith(".params")]
    assert {"raysight.json", "hyperparams.json", "model-shapes.json"} <= names
    assert len(meta_params) == 1 and re.fullmatch(r"image-classification-\d{4}\.params", meta_params[0])
    algo, model, meta = algorithms.load_model(str(path))
    assert algo.name == "image-classification"
    assert meta["hyperparameters"]["num_classes"] == 10
    assert model.fc.out_features == 10


@pytest.mark.slow
def test_completed_job_name_cannot_be_reused(trained):
    _, out, request = trained
    before = (out / "tiny-job" / "output" / "job.json").read_text()
    proc = run_cli("train", request)
    assert proc.returncode == 1
    assert "ResourceInUse: training job 'tiny-job' already completed" in proc.stdout
    assert (out / "tiny-job" / "output" / "job.json").read_text() == before  # the record is kept


@pytest.mark.slow
def test_an_invalid_request_under_a_completed_name_keeps_the_record(trained, tmp_path):
    _, out, request = trained
    before = (out / "tiny-job" / "output" / "job.json").read_text()
    with open(request) as f:
        bad = json.load(f)
    bad["HyperParameters"]["epochs"] = "0"
    proc = run_cli("train", write_json(tmp_path / "bad.json", bad))
    assert proc.returncode == 2 and "hyperparameter 'epochs' must be >= 1" in proc.stderr
    assert (out / "tiny-job" / "output" / "job.json").read_text() == before


def test_bad_label_fails_before_training_with_file_and_entry(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    lst = tmp_path / "train_lst"
    lst.mkdir()
    with open(os.path.join(root, "train_lst", "train.lst")) as f:
        lines = f.read().splitlines()
    index = lines[3].split("\t")[0]
    fields = lines[3].split("\t")
    lines[3] = "\t".join([fields[0], "12.000000", fields[2]])
    (lst / "train.lst").write_text("\n".join(lines) + "\n")
    request = tiny_request(root, str(tmp_path / "out"), "bad-label", counts)
    request["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] = str(lst)
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 1
    with open(tmp_path / "out" / "bad-label" / "output" / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"].startswith("ClientError: ")
    assert f"train.lst entry {index}: class id 12 must be an integer in [0, 9]" in job["FailureReason"]
    assert not (tmp_path / "out" / "bad-label" / "output" / "model.tar.gz").exists()
    assert "Epoch[0]" not in proc.stdout + proc.stderr  # nothing was trained


def test_missing_image_is_named(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    lst = tmp_path / "validation_lst"
    lst.mkdir()
    (lst / "v.lst").write_text("1\t3.000000\t3/does-not-exist.png\n")
    request = tiny_request(root, str(tmp_path / "out"), "missing-image", counts)
    request["InputDataConfig"][3]["DataSource"]["S3DataSource"]["S3Uri"] = str(lst)
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 1
    assert "image '3/does-not-exist.png' not found under" in proc.stdout


def test_validate_only_reports_problems_without_running(tmp_path):
    request = tiny_request("/nowhere", str(tmp_path), "v-job", {"train": 5}, learning_rate="7", foo="1")
    proc = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 2
    assert "ClientError: Additional hyperparameters are not allowed ('foo' was unexpected)" in proc.stderr
    assert "hyperparameter 'learning_rate' must be within [0, 1], got '7'" in proc.stderr
    ok = tiny_request("/nowhere", str(tmp_path), "v-job", {"train": 5})
    proc = run_cli("train", "--validate-only", write_json(tmp_path / "ok.json", ok))
    assert proc.returncode == 0 and "is valid" in proc.stdout


def test_the_served_params_are_the_best_epochs_not_the_last(ray_cluster, tmp_path):
    """Ray Train's checkpoint retention as the driver configures it, then the driver's packing:
    the best epoch (1 of 0-3) is the one served, though later epochs reported after it."""
    import torch
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysight.hyperparams import parse_hyperparameters
    from raysight.train import driver

    ic = algorithms.get("image-classification")
    hp = parse_hyperparameters(ic.hyperparameters, {"num_classes": "2", "num_training_samples": "4", "epochs": "4"})

    def loop(config):
        import torch

        from raysight.train.loop import Progress, _report, keep_score

        net, progress = torch.nn.Linear(1, 1), Progress(config["hp"])
        for epoch, score in enumerate([0.5, 0.9, 0.7, 0.6]):
            with torch.no_grad():
                net.weight.fill_(float(epoch))
            improved, _ = progress.update(score)
            _report({"epoch": epoch, "best": progress.best, "is_best": improved, "is_frequency": False,
                     "keep_score": keep_score(epoch, improved, False)}, net, {"epoch": epoch}, None, True)

    result = TorchTrainer(loop, train_loop_config={"hp": hp}, scaling_config=ScalingConfig(num_workers=1),
                          run_config=RunConfig(name="best-not-last", storage_path=str(tmp_path / "ckpt"),
                                               checkpoint_config=driver.checkpoint_config(hp))).fit()
    job = type("Job", (), {"output_path": str(tmp_path / "out"), "name": "best-not-last"})()
    uri = driver._write_model(job, ic, hp, result)
    with tarfile.open(uri) as tar:
        tar.extractall(tmp_path / "model", filter="data")
    meta = json.loads((tmp_path / "model" / "raysight.json").read_text())
    assert meta["params"] == "image-classification-0002.params" and meta["epoch"] == 1
    state = torch.load(tmp_path / "model" / meta["params"], weights_only=True)
    assert float(state["weight"]) == 1.0  # epoch 1's weights, not the last epoch's (3)
    assert sorted(p.name for p in (tmp_path / "model").glob("*.params")) == ["image-classification-0002.params"]
