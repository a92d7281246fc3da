"""The SageMaker Python SDK v2, unchanged, against `raysight api`: jobs/sagemaker_sdk_example.py
(fit with logs → deploy → predict → HyperparameterTuner → transformer) in the SDK's own virtual
environment (`.venv-sdk`, made by `make install`), with S3 on the session's moto server."""
import os
import re
import subprocess

import boto3
import pytest

from tests.conftest import ROOT, free_port
from tests.test_api import start_api

SDK_PYTHON = os.path.join(ROOT, ".venv-sdk", "bin", "python")


@pytest.mark.slow
def test_the_sdk_notebook_flow_runs_unchanged(ray_cluster, s3, digits_small, tmp_path):
    assert os.path.exists(SDK_PYTHON), "the SageMaker SDK's environment is missing: run `make install`"
    # one key pair for every client of the SDK's boto session: moto takes any, the API this one
    key, secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
    (tmp_path / "credentials").write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    # no --local-root: the notebook's locations are all on S3, which is what the default allows
    proc, url = start_api(tmp_path / "state", tmp_path / "credentials", free_port(), local_roots=[],
                          extra=["--serve-port", str(free_port()), "--replica-cpus", "0.5"])
    boto3.client("s3").create_bucket(Bucket="sdk-example")
    env = {**os.environ, "AWS_ENDPOINT_URL_SAGEMAKER": url, "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
           "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": url, "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}
    env.pop("PYTHONPATH", None)
    try:
        run = subprocess.run([SDK_PYTHON, os.path.join(ROOT, "jobs", "sagemaker_sdk_example.py"), "--data",
                              digits_small[0], "--bucket", "sdk-example"], capture_output=True, text=True,
                             timeout=1200, env=env, cwd=str(tmp_path))
        # deploy → predict → delete_model / delete_endpoint left nothing behind
        left = boto3.client("sagemaker", endpoint_url=url).list_endpoints()["Endpoints"]
    finally:
        proc.terminate()
        proc.wait(30)
        from ray import serve

        serve.shutdown()
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    # fit(logs=True) streamed the job's log through CloudWatch Logs' API, metric lines as SageMaker's
    assert re.search(r"^Epoch\[2\] Validation-accuracy=[0-9.]+$", out, re.M), out[-3000:]
    assert "Completed - Training job completed" in out
    served = re.search(r"endpoint accuracy on (\d+) validation images: ([0-9.]+)", out)
    expected = sum(len(files) for _, _, files in os.walk(os.path.join(digits_small[0], "validation")))
    assert served and int(served.group(1)) == expected, out[-3000:]
    accuracy = float(served.group(2))
    assert accuracy > 0.2, out[-3000:]  # 10 classes: chance is 0.1
    best = re.search(r"^best training job: (ic-tune-\d+-00[12]-[0-9a-f]{8})", out, re.M)
    assert best, out[-3000:]
    # logs_for_job(best) printed that child's own stream: its lines, untagged, and no other job's
    tail = out[best.end():]
    # (the SDK ends its status line without a newline, so the first log line may follow on it)
    assert set(re.findall(r"Training job (ic-tune-\S+): ", tail)) == {best.group(1)}, tail[-3000:]
    assert re.search(r"^Epoch\[\d+\] Validation-accuracy=[0-9.]+$", tail, re.M), tail[-3000:]
    assert not re.search(r"^\[ic-tune-", tail, re.M), tail[-3000:]
    # the channels' content type is AWS's notebook's application/jpeg, read as images + .lst
    assert re.search(r"Input format: train: images \+ channel 'train_lst' \(ContentType 'application/jpeg' is an "
                     r"image type", out), out[-3000:]
    # the tuner's best job: described with its RoleArn (best_estimator), attached with its tags, deployed
    assert re.search(rf"^best estimator: {best.group(1)} s3://sdk-example/\S+/model.tar.gz role: "
                     r"arn:aws:iam::000000000000:role/raysight$", out, re.M), out[-3000:]
    assert "attached tags: [{'Key': 'project', 'Value': 'raysight-example'}]" in out, out[-3000:]
    assert "tuned endpoint answers: 10 probabilities" in out, out[-3000:]
    expected = len(os.listdir(os.path.join(digits_small[0], "validation", "0")))
    assert f"transform: {expected} .out files under s3://sdk-example/" in out, out[-3000:]
    # transformer.wait() streamed the transform job's own log (/aws/sagemaker/TransformJobs)
    assert re.search(rf"Transform job ic-transform-\d+: {expected} object\(s\) from s3://", tail), tail[-3000:]
    assert f"{expected} of {expected} object(s) transformed into s3://sdk-example/" in tail, tail[-3000:]
    assert left == [], left
