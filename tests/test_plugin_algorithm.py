"""The contract holds: a third algorithm defined in the test tree alone (tests/plugins/,
no edit to raysight/) is trained by `raysight train` on a local Ray, packed into its
model.tar.gz, served by `raysight serve` and answers over HTTP."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time

import pytest

from raysight.formats.lst import parse_lst
from tests.conftest import ROOT, free_port, run_cli, write_json
from tests.test_serve import ping, post, runtime

PLUGIN_ENV = {"RAYSIGHT_ALGORITHMS": "digit_is_high",
              "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "tests", "plugins"), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
def test_a_plugin_algorithm_trains_and_serves(ray_cluster, digits_small, tmp_path):
    from raysight.sample_data import digits

    root, counts = digits_small
    request = digits.training_request(root, str(tmp_path / "out"), name="high-digits", counts=counts,
                                      epochs="8", mini_batch_size="16", optimizer="adam", learning_rate="0.005",
                                      lr_scheduler_step="", side="16")
    request["AlgorithmSpecification"] = {"AlgorithmName": "digit-is-high", "TrainingInputMode": "File"}
    for drop in ("num_classes", "image_shape", "resize", "num_layers"):
        request["HyperParameters"].pop(drop, None)

    # the CLI lists it beside the built-ins, and validates requests against its rows
    table = run_cli("hyperparameters", "digit-is-high", env=PLUGIN_ENV)
    assert table.returncode == 0 and "| side | no | int | >= 8 | 16 |" in table.stdout, table.stderr[-2000:]
    wrong = dict(request, HyperParameters={**request["HyperParameters"], "num_layers": "20"})
    refused = run_cli("train", "--validate-only", write_json(tmp_path / "wrong.json", wrong), env=PLUGIN_ENV)
    assert refused.returncode == 2 and "'num_layers' was unexpected" in refused.stderr

    trained = run_cli("train", write_json(tmp_path / "request.json", request), env=PLUGIN_ENV, timeout=900)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]
    out = tmp_path / "out" / "high-digits" / "output"
    job = json.loads((out / "job.json").read_text())
    metrics = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert job["TrainingJobStatus"] == "Completed" and metrics["validation:accuracy"] > 0.75, metrics
    with tarfile.open(out / "model.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.startswith("digit-is-high-") and n.endswith(".params") for n in names), names

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "raysight", "serve", str(out / "model.tar.gz"), "--port",
                               str(port)], env={**os.environ, **PLUGIN_ENV}, cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        while ping(port) != 200:
            assert server.poll() is None and time.time() < deadline, server.stdout.read()[-3000:]
            time.sleep(1)
        with open(os.path.join(root, "validation_lst", "validation.lst")) as f:
            first = parse_lst(f.read())[0]
        with open(os.path.join(root, "validation", first.path), "rb") as f:
            status, ctype, body = post(port, f.read(), "image/png")
        assert status == 200 and ctype.startswith("application/json"), body
        answer = json.loads(body)
        assert set(answer) == {"high"} and 0.0 <= answer["high"] <= 1.0
        # The predictor's custom attributes come back through boto3's sagemaker-runtime.
        with open(os.path.join(root, "validation", first.path), "rb") as f:
            reply = runtime(port).invoke_endpoint(EndpointName="raysight", ContentType="image/png", Body=f.read(),
                                                  CustomAttributes="threshold=0.5")
        assert reply["CustomAttributes"] == "seen=threshold=0.5"
        assert json.loads(reply["Body"].read()) == answer
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    assert server.returncode == 0 and "Stopped." in out, out[-3000:]  # Serve shut down: no app left behind
