"""The main job on the embedded default: digits → train → serve → classify over HTTP."""
from __future__ import annotations

import json
import os
import shutil
import time
import urllib.error
import urllib.request

from raysight.sample_data import digits
from raysight.formats.lst import parse_lst


def run_demo(workdir: str, port: int = 8080, epochs: str | None = None) -> int:
    from ray import serve

    from raysight.serve import app
    from raysight.train import driver

    workdir = os.path.abspath(workdir)
    data_root = os.path.join(workdir, "digits")
    print(f"1/4 Exporting scikit-learn's handwritten digits to {data_root}", flush=True)
    counts = digits.export(data_root)
    print(f"    {counts['train']} training and {counts['validation']} validation PNG images + .lst files")

    name = time.strftime("digits-resnet20-%Y%m%d-%H%M%S")
    overrides = {"epochs": epochs} if epochs else {}
    request = digits.training_request(data_root, os.path.join(workdir, "jobs"), name=name, counts=counts, **overrides)
    digits.write_request(os.path.join(workdir, "request.json"), request)
    print(f"2/4 Training {name} (ResNet-20) on a local Ray; request in {workdir}/request.json", flush=True)
    record = driver.run(request)
    if record["TrainingJobStatus"] != "Completed":
        print(f"Training failed: {record.get('FailureReason')}")
        return 1
    model = os.path.join(workdir, "model.tar.gz")
    shutil.copyfile(record["ModelArtifacts"]["S3ModelArtifacts"], model)  # what serve_configs/ points at
    final = {m["MetricName"]: round(m["Value"], 4) for m in record["FinalMetricDataList"]}
    print(f"    {final}; model at {model}")

    print(f"3/4 Serving the model with Ray Serve on http://127.0.0.1:{port}", flush=True)
    app.run(model, port=port)
    try:
        wait_ready(port)
        print("4/4 Classifying every validation image over HTTP (POST /invocations, image/png)", flush=True)
        accuracy, agree, total = classify_over_http(port, data_root, model)
        print(f"    HTTP accuracy on {total} validation images: {accuracy:.4f}")
        print(f"    {agree} of {total} HTTP answers match the served model called directly")
    finally:
        serve.shutdown()
    print("Done: Ray Serve shut down.")
    # What the demo promises, and why no threshold sits on the HTTP accuracy: training scores
    # validation images resized to `resize` and centre-cropped (SageMaker's training transform),
    # while SageMaker's inference contract resizes the whole image to image_shape, so the HTTP
    # accuracy runs a point or two lower by design. The promise is that training reached 0.95
    # and the endpoint answers exactly what the served model computes under that contract.
    trained = final.get("validation:accuracy", 0.0) >= MIN_VALIDATION_ACCURACY
    if not trained:
        print(f"validation:accuracy {final.get('validation:accuracy')} is below {MIN_VALIDATION_ACCURACY}")
    return 0 if trained and agree == total else 1


MIN_VALIDATION_ACCURACY = 0.95


def classify_over_http(port: int, data_root: str, model: str) -> tuple[float, int, int]:
    """(HTTP accuracy, answers equal to a direct call of the served model, images)."""
    import numpy as np

    from raysight import algorithms

    algo, net, meta = algorithms.load_model(model)
    predictor = algo.predictor(net, meta)
    with open(os.path.join(data_root, "validation_lst", "validation.lst")) as f:
        entries = parse_lst(f.read())
    correct = agree = 0
    for i, e in enumerate(entries):
        with open(os.path.join(data_root, "validation", e.path), "rb") as f:
            body = f.read()
        probs = invoke(port, body, "image/png")
        [direct] = predictor.predict_batch([predictor.decode(body, "request body")])
        predicted = max(range(len(probs)), key=probs.__getitem__)
        correct += predicted == int(e.labels[0])
        agree += bool(np.allclose(probs, direct, atol=1e-5))
        if i < 3:
            print(f"    {e.path}: label {int(e.labels[0])}, predicted {predicted}, "
                  f"answer {json.dumps([round(p, 3) for p in probs])}")
    return correct / len(entries), agree, len(entries)


def wait_ready(port: int, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the endpoint on port {port} did not become ready in {timeout:.0f}s")


def invoke(port: int, body: bytes, content_type: str, accept: str = "application/json"):
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Accept": accept})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read())
