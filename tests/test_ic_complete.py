"""Image classification beyond the basics: starting weights, time limits, stop signals."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from raysight import algorithms
from raysight.errors import ClientError
from raysight.hyperparams import parse_hyperparameters
from tests.conftest import ROOT, parse_job, run_cli, tiny_request, write_json

IC = algorithms.get("image-classification")


def hp_for(**values):
    return parse_hyperparameters(IC.hyperparameters, {"num_classes": "10", "num_training_samples": "10",
                                                      "image_shape": "3,32,32", **values})


class _Job:
    channels = {}


def test_pretrained_weights_from_a_configured_folder(tmp_path, monkeypatch):
    from torchvision.models import resnet18

    from raysight.models.weights import torchvision_filename

    torch.manual_seed(1)
    imagenet = resnet18()  # stands in for the ImageNet download: same names and shapes
    torch.save(imagenet.state_dict(), tmp_path / torchvision_filename("resnet18"))
    monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", str(tmp_path))
    state = IC.initial_state(_Job(), hp_for(num_layers="18", use_pretrained_model="1"))
    assert torch.equal(state["layer3.1.conv2.weight"], imagenet.state_dict()["layer3.1.conv2.weight"])
    assert state["fc.weight"].shape == (10, 512)  # the head is new, sized for num_classes


def test_pretrained_weights_from_s3(s3, tmp_path, monkeypatch):
    """RAYSIGHT_PRETRAINED_WEIGHTS as an s3:// folder (torchvision's file name) and as one file."""
    import io

    from torchvision.models import resnet18

    from raysight.models.weights import torchvision_filename
    from tests.conftest import BUCKET

    torch.manual_seed(2)
    buf = io.BytesIO()
    torch.save(resnet18().state_dict(), buf)
    for key in (f"pretrained/{torchvision_filename('resnet18')}", "pretrained-file/mine.pth"):
        s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
    expected = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["layer4.0.conv1.weight"]
    for where in (f"s3://{BUCKET}/pretrained", f"s3://{BUCKET}/pretrained-file/mine.pth"):
        monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", where)
        state = IC.initial_state(_Job(), hp_for(num_layers="18", use_pretrained_model="1"))
        assert torch.equal(state["layer4.0.conv1.weight"], expected), where


def test_pretrained_weights_from_the_torch_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import resnet34

    from raysight.models.weights import torchvision_filename

    monkeypatch.delenv("RAYSIGHT_PRETRAINED_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    net = resnet34()
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / torchvision_filename("resnet34"))
    state = IC.initial_state(_Job(), hp_for(num_layers="34", use_pretrained_model="1"))
    assert torch.equal(state["conv1.weight"], net.state_dict()["conv1.weight"])


def test_missing_pretrained_weights_name_where_raysight_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", str(tmp_path / "mine"))
    with pytest.raises(ClientError) as e:
        IC.initial_state(_Job(), hp_for(num_layers="50", use_pretrained_model="1"))
    text = str(e.value)
    assert "no ImageNet weights for resnet50" in text
    assert str(tmp_path / "mine" / "resnet50.pth") in text
    assert os.path.join(str(tmp_path), "hub", "checkpoints") in text
    # a weights file for another network does not fit and says so
    from torchvision.models import resnet18

    torch.save(resnet18().state_dict(), tmp_path / "wrong.pth")
    monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", str(tmp_path / "wrong.pth"))
    with pytest.raises(ClientError, match="does not fit the network"):
        IC.initial_state(_Job(), hp_for(num_layers="50", use_pretrained_model="1"))


@pytest.fixture(scope="module")
def base_model(ray_cluster, digits_small, tmp_path_factory):
    root, counts = digits_small
    out = tmp_path_factory.mktemp("base")
    proc = run_cli("train", write_json(out / "r.json", tiny_request(root, str(out), "base", counts, epochs="3")))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return str(out / "base" / "output" / "model.tar.gz")


def model_channel(uri):
    return {"ChannelName": "model", "ContentType": "application/x-sagemaker-model", "InputMode": "File",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri}}}


@pytest.mark.slow
def test_incremental_training_starts_from_the_model_channel(base_model, digits_small, tmp_path):
    root, counts = digits_small
    with open(os.path.join(os.path.dirname(base_model), "job.json")) as f:
        base_accuracy = {m["MetricName"]: m["Value"] for m in json.load(f)["FinalMetricDataList"]}
    request = tiny_request(root, str(tmp_path), "more", counts, epochs="1", learning_rate="0.001")
    request["InputDataConfig"].append(model_channel(base_model))
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open(tmp_path / "more" / "output" / "job.json") as f:
        accuracy = {m["MetricName"]: m["Value"] for m in json.load(f)["FinalMetricDataList"]}
    # one epoch at a tiny learning rate keeps what the base model learned; from scratch it would be near 0.1
    assert accuracy["validation:accuracy"] >= base_accuracy["validation:accuracy"] - 0.1
    assert accuracy["validation:accuracy"] > 0.3


@pytest.mark.slow
def test_incremental_training_refuses_a_different_architecture(base_model, digits_small):
    root, counts = digits_small
    request = tiny_request(root, "/tmp/unused-out", "mismatch", counts, num_classes="12", num_layers="32")
    request["InputDataConfig"].append(model_channel(base_model))
    job = parse_job(request)
    hp = parse_hyperparameters(IC.hyperparameters, job.hyperparameters)
    with pytest.raises(ClientError) as e:
        IC.initial_state(job, hp)
    assert "num_layers is 20 in the model but 32 in this job" in str(e.value)
    assert "num_classes is 10 in the model but 12 in this job" in str(e.value)


@pytest.mark.slow
def test_max_runtime_stops_and_keeps_the_model(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    # More epochs than any machine runs in 30 s (each epoch is a Ray Data execution): the
    # limit, not the epoch count, ends this job however fast the machine is.
    request = tiny_request(root, str(tmp_path), "short", counts, epochs="100000")
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = 30
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 3, proc.stderr[-2000:]
    with open(tmp_path / "short" / "output" / "job.json") as f:
        job = json.load(f)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert job["TrainingTimeInSeconds"] >= 30  # it ran until the limit
    assert os.path.exists(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert "Epoch[0] Validation-accuracy" in proc.stdout + proc.stderr  # a trained model was kept


@pytest.mark.slow
def test_a_stop_before_the_first_epoch_ends_keeps_that_model(ray_cluster, digits_small, tmp_path):
    """MaxRuntimeInSeconds=1 has passed before a worker starts (setup alone takes longer), so
    the stop lands in epoch 0's first step: the job ends Stopped with the model it has."""
    root, counts = digits_small
    request = tiny_request(root, str(tmp_path), "early", counts, epochs="5")
    request["StoppingCondition"]["MaxRuntimeInSeconds"] = 1
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 3, out[-3000:]
    assert "Stopping (MaxRuntimeExceeded) in epoch 0" in out and "Epoch[1]" not in out
    with open(tmp_path / "early" / "output" / "job.json") as f:
        job = json.load(f)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "MaxRuntimeExceeded")
    assert os.path.exists(job["ModelArtifacts"]["S3ModelArtifacts"])


@pytest.mark.slow
def test_sigterm_stops_the_job_and_keeps_the_model(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = write_json(tmp_path / "r.json", tiny_request(root, str(tmp_path), "sig", counts, epochs="200"))
    proc = subprocess.Popen([sys.executable, "-m", "raysight", "train", request], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = proc.stdout.readline()
        seen.append(line)
        if "Epoch[1] Time cost" in line:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 3, "".join(seen)[-2000:] + out[-2000:]
    with open(tmp_path / "sig" / "output" / "job.json") as f:
        job = json.load(f)
    assert (job["TrainingJobStatus"], job["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert os.path.exists(job["ModelArtifacts"]["S3ModelArtifacts"])
    assert "Epoch[199]" not in out


@pytest.mark.slow
def test_killed_worker_resumes_from_the_last_checkpoint(ray_cluster, digits_small, tmp_path):
    """kill -9 of the Ray Train worker mid-training: Ray Train restarts the worker group,
    which resumes from the last checkpoint, and the job completes."""
    import re

    root, counts = digits_small
    # Enough epochs that the kill lands mid-training: a tiny decoded-once channel trains in
    # well under a second per epoch.
    request = write_json(tmp_path / "r.json", tiny_request(root, str(tmp_path), "killed", counts, epochs="15"))
    log = tmp_path / "train.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "raysight", "train", request], cwd=ROOT, text=True,
                                stdout=sink, stderr=subprocess.STDOUT)
    # Kill only once Ray Train's controller has registered a checkpoint (it then writes its
    # snapshot): a worker's report is collected on the controller's next poll, and a kill
    # before that would lose it. No guess about the poll interval.
    snapshot = tmp_path / "killed" / "checkpoints" / "killed" / "checkpoint_manager_snapshot.json"
    pid, deadline = None, time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = re.search(r"RayTrainWorker pid=(\d+)\)[^\n]*Storing the best model", log.read_text())
        if found and snapshot.exists() and "checkpoint" in snapshot.read_text():
            pid = int(found.group(1))
            break
        time.sleep(0.1)
    assert pid, log.read_text()[-3000:]
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=400)
    out = log.read_text()
    assert proc.returncode == 0, out[-3000:]
    assert "Resuming from checkpoint of epoch" in out
    assert "Epoch[14] Validation-accuracy" in out
    with open(tmp_path / "killed" / "output" / "job.json") as f:
        assert json.load(f)["TrainingJobStatus"] == "Completed"


@pytest.mark.slow
def test_a_job_killed_outright_resumes_under_its_name_from_its_checkpoint_s3_uri(ray_cluster, s3, digits_small,
                                                                                 tmp_path):
    """CheckpointConfig.S3Uri holds Ray Train's checkpoints (on S3 here); the driver is killed
    outright (kill -9 of `raysight train` and what it started) once a checkpoint is
    registered; the same request again, under the same name, resumes from it and completes."""
    from tests.conftest import BUCKET

    root, counts = digits_small
    request = tiny_request(root, str(tmp_path), "resumed", counts, epochs="8")
    request["CheckpointConfig"] = {"S3Uri": f"s3://{BUCKET}/ckpt/resumed"}
    path = write_json(tmp_path / "r.json", request)
    with open(tmp_path / "first.log", "w") as sink:
        first = subprocess.Popen([sys.executable, "-m", "raysight", "train", path], cwd=ROOT, stdout=sink,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    snapshot, deadline = "ckpt/resumed/resumed/checkpoint_manager_snapshot.json", time.time() + 300
    while time.time() < deadline and first.poll() is None:
        found = s3.list_objects_v2(Bucket=BUCKET, Prefix=snapshot).get("KeyCount", 0)
        if found and b"checkpoint" in s3.get_object(Bucket=BUCKET, Key=snapshot)["Body"].read():
            break
        time.sleep(0.2)
    assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]  # killed mid-training
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=60)
    with open(tmp_path / "resumed" / "output" / "job.json") as f:
        assert json.load(f)["TrainingJobStatus"] == "InProgress"  # what a killed job leaves

    second = run_cli("train", path)
    out = second.stdout + second.stderr
    assert second.returncode == 0, out[-3000:]
    assert "Resuming from checkpoint of epoch" in out and "Epoch[7] Validation-accuracy" in out
    assert "Epoch[0] Validation-accuracy" not in out  # it did not start over
    with open(tmp_path / "resumed" / "output" / "job.json") as f:
        assert json.load(f)["TrainingJobStatus"] == "Completed"
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="ckpt/resumed/")["Contents"]]
    assert any("/checkpoint_" in k and k.endswith("model.pt") for k in keys), keys
