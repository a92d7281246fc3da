"""A real Ray Serve endpoint on loopback, spoken to over HTTP."""
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

from raysight import algorithms, artifacts
from raysight.hyperparams import parse_hyperparameters
from tests.conftest import ROOT, free_port

IC = algorithms.get("image-classification")


def make_model(path, **overrides) -> str:
    """A real (randomly initialised) ResNet-20 packed as raysight's model.tar.gz."""
    hp = parse_hyperparameters(IC.hyperparameters, {"num_classes": "4", "num_training_samples": "10",
                                                    "num_layers": "20", "image_shape": "3,16,16", **overrides})
    torch.manual_seed(0)
    model = IC.build_model(hp)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    blob = artifacts.build_tarball(IC.name, IC.artifact_prefix, hp, {0: buf.getvalue()}, 0, IC.input_shape(hp))
    with open(path, "wb") as f:
        f.write(blob)
    return str(path)


def encode(fmt: str, size=(23, 17), seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def post(port, body, content_type, accept=None):
    headers = {"Content-Type": content_type}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body, headers=headers,
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def ping(port) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as r:
            return r.status
    except OSError:  # refused, reset, or timed out while the replica starts
        return 0


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tmp_path_factory):
    from ray import serve

    from raysight.serve import app

    model = make_model(tmp_path_factory.mktemp("model") / "model.tar.gz")
    port = free_port()
    app.run(model, port=port)
    yield port, model
    serve.shutdown()


def test_ping(endpoint):
    port, _ = endpoint
    assert ping(port) == 200


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                               ("PNG", "application/x-image")])
def test_invocations_match_a_direct_model_call(endpoint, fmt, content_type):
    port, model_uri = endpoint
    body = encode(fmt)
    status, ctype, payload = post(port, body, content_type)
    assert status == 200 and ctype.startswith("application/json")
    probs = json.loads(payload)
    assert len(probs) == 4
    assert abs(sum(probs) - 1.0) < 1e-4

    # The same preprocessing and model, called directly, agree with the HTTP answer.
    from raysight.images import decode_rgb

    algo, net, meta = algorithms.load_model(model_uri)
    [direct] = algo.predictor(net, meta).predict_batch([decode_rgb(body)])
    assert np.argmax(direct) == np.argmax(probs)
    assert np.allclose(direct, probs, atol=1e-5)


def test_jsonlines_accept(endpoint):
    port, _ = endpoint
    status, ctype, payload = post(port, encode("PNG"), "image/png", accept="application/jsonlines")
    assert status == 200 and ctype.startswith("application/jsonlines")
    assert len(json.loads(payload.decode().strip())["prediction"]) == 4


def test_bad_requests_get_4xx_and_the_server_stays_up(endpoint):
    port, _ = endpoint
    status, _, payload = post(port, b"hello", "text/plain")
    assert status == 415 and "unsupported Content-Type 'text/plain'" in json.loads(payload)["message"]
    status, _, payload = post(port, b"\x89PNG not really", "image/png")
    assert status == 400 and "cannot decode image" in json.loads(payload)["message"]
    status, _, _ = post(port, b"", "image/png")
    assert status == 400
    status, _, payload = post(port, encode("PNG"), "image/png", accept="text/csv")
    assert status == 406
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/nothing-here", timeout=5)
    assert e.value.code == 404
    assert ping(port) == 200
    status, _, _ = post(port, encode("JPEG"), "image/jpeg")
    assert status == 200


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_hostile_payloads_get_4xx_and_the_server_stays_up(endpoint):
    port, _ = endpoint
    status, _, payload = post(port, png_header(40000, 40000), "image/png")  # a decompression bomb
    assert status == 400 and "decompression bomb" in json.loads(payload)["message"]
    full = encode("JPEG", size=(64, 48))
    status, _, payload = post(port, full[: len(full) // 2], "image/jpeg")  # truncated
    assert status == 400 and "cannot decode image" in json.loads(payload)["message"]
    status, _, payload = post(port, b"\xff" * (6 * 1024 * 1024 + 1), "image/jpeg")  # over InvokeEndpoint's 6 MiB
    assert status == 413 and "exceeds" in json.loads(payload)["message"]
    assert ping(port) == 200
    assert post(port, encode("PNG"), "image/png")[0] == 200


def test_execution_parameters(endpoint):
    port, _ = endpoint
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/execution-parameters", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        assert json.loads(r.read()) == {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD",
                                        "MaxPayloadInMB": 6}


def test_serve_cli_starts_answers_and_stops_on_sigterm(tmp_path):
    """`raysight serve` in its own process, with its own local Ray."""
    model = make_model(tmp_path / "model.tar.gz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "raysight", "serve", model, "--port", str(port)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 180
        assert "Serving" in proc.stdout.readline() or "Serving" in _read_until(proc, "Serving", deadline)
        while ping(port) != 200:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "endpoint never became ready"
            time.sleep(1)
        status, _, payload = post(port, encode("PNG"), "image/png")
        assert status == 200 and len(json.loads(payload)) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out
    assert "Stopped." in out


def _read_until(proc, marker, deadline) -> str:
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            break
    return "".join(seen)
