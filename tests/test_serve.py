"""Real Ray Serve endpoints on loopback, spoken to over HTTP and with boto3's sagemaker-runtime.

One Serve proxy for the module; each endpoint is its own Serve application under a route
prefix (`/od/invocations` is the OD app's `/invocations`; boto3 reaches its runtime route
with endpoint_url=http://127.0.0.1:PORT/od)."""
import http.client
import io
import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request

import boto3
import numpy as np
import pytest
import torch
from botocore.exceptions import ClientError
from PIL import Image

from raysight import algorithms, artifacts
from raysight.hyperparams import parse_hyperparameters
from tests.conftest import free_port

IC = algorithms.get("image-classification")
OD = algorithms.get("object-detection")


def make_model(path, algorithm: str = "image-classification", seed: int = 0, **overrides) -> str:
    """A real (randomly initialised) network packed as raysight's model.tar.gz: a ResNet-20 with
    4 classes at 16x16, or an SSD (ResNet-50 base at width 0.125, 3 classes, 300 px)."""
    algo = algorithms.get(algorithm)
    base = ({"num_classes": "4", "num_training_samples": "10", "num_layers": "20", "image_shape": "3,16,16"}
            if algorithm == IC.name else
            {"num_classes": "3", "num_training_samples": "10", "base_network": "resnet-50", "image_shape": "300",
             "raysight_width_multiplier": "0.125", "use_pretrained_model": "0"})
    hp = parse_hyperparameters(algo.hyperparameters, {**base, **overrides})
    torch.manual_seed(seed)
    model = algo.build_model(hp)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    blob = artifacts.build_tarball(algo.name, algo.artifact_prefix, hp, {0: buf.getvalue()}, 0, algo.input_shape(hp))
    with open(path, "wb") as f:
        f.write(blob)
    return str(path)


def encode(fmt: str, size=(23, 17), seed=0, mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    if mode == "I;16":  # 16-bit grayscale
        image = Image.fromarray(pixels[..., 0].astype(np.uint16) * 257)
    else:
        image = Image.fromarray(pixels).convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def post(port, body, content_type, accept=None, path="/invocations", headers=None):
    headers = {"Content-Type": content_type, **(headers or {})}
    if accept:
        headers["Accept"] = accept
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def ping(port, prefix="") -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{prefix}/ping", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:  # refused, reset, or timed out while the replica starts
        return 0


def runtime(port, prefix=""):
    return boto3.client("sagemaker-runtime", endpoint_url=f"http://127.0.0.1:{port}{prefix}", region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")


def direct(model_uri: str, body: bytes, accept: str = "application/json") -> bytes:
    """The same preprocessing and model, called in this process, one image at a time."""
    algo, net, meta = algorithms.load_model(model_uri)
    predictor = algo.predictor(net, meta)
    [result] = predictor.predict_batch([predictor.decode(body, "test")])
    return predictor.render(result, accept)[0]


def same_answer(a, b, atol=1e-4) -> bool:
    """Equal JSON answers up to float rounding (thread counts and batch sizes change the last bits)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same_answer(a[k], b[k], atol) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(same_answer(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= atol
    return a == b


def deploy(model: str, name: str, prefix: str, **settings):
    from ray import serve

    from raysight.serve import app

    handle = serve.run(app.build({"model": model, "name": name, **settings}), name=name, route_prefix=prefix)
    return handle.ready.remote().result(timeout_s=300)


@pytest.fixture(scope="module")
def endpoints(ray_cluster, tmp_path_factory):
    """Four endpoints on one proxy: IC at /, OD at /od, a multi-model folder at /mme, and an
    IC endpoint whose answers time out at /slow."""
    from ray import serve

    root = tmp_path_factory.mktemp("models")
    ic, od = make_model(root / "ic.tar.gz"), make_model(root / "od.tar.gz", OD.name)
    (root / "mme" / "v2").mkdir(parents=True)
    make_model(root / "mme" / "digits-v1.tar.gz")
    make_model(root / "mme" / "v2" / "digits-v2.tar.gz", seed=1, num_classes="3")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    assert deploy(ic, "raysight", "/", max_batch_size=16)["error"] is None
    assert deploy(od, "shapes", "/od", max_batch_size=16)["error"] is None
    assert deploy(str(root / "mme"), "multi", "/mme", multi_model=True, max_models_per_replica=1)["error"] is None
    assert deploy(ic, "slow", "/slow", timeout_s=1e-6)["error"] is None
    yield {"port": port, "ic": ic, "od": od, "mme": str(root / "mme")}
    serve.shutdown()


def test_ping_and_openapi(endpoints):
    port = endpoints["port"]
    assert ping(port) == 200 and ping(port, "/od") == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=10) as r:
        paths = json.loads(r.read())["paths"]
    assert {"/ping", "/invocations", "/execution-parameters", "/endpoints/{endpoint_name}/invocations"} <= set(paths)


@pytest.mark.parametrize("fmt,content_type", [("PNG", "image/png"), ("JPEG", "image/jpeg"),
                                               ("PNG", "application/x-image")])
def test_invocations_match_a_direct_model_call(endpoints, fmt, content_type):
    body = encode(fmt)
    status, ctype, payload = post(endpoints["port"], body, content_type)
    assert status == 200 and ctype.startswith("application/json")
    probs = json.loads(payload)
    assert len(probs) == 4 and abs(sum(probs) - 1.0) < 1e-4
    assert np.allclose(probs, json.loads(direct(endpoints["ic"], body)), atol=1e-5)


@pytest.mark.parametrize("prefix,name,model,accept", [
    ("", "raysight", "ic", "application/json"), ("", "raysight", "ic", "application/jsonlines"),
    ("/od", "shapes", "od", "application/json"), ("/od", "shapes", "od", "application/json;annotation=1"),
    ("/od", "shapes", "od", "application/jsonlines")])
def test_boto3_invoke_endpoint_answers_as_the_model(endpoints, prefix, name, model, accept):
    body = encode("JPEG", size=(96, 64), seed=3)
    answer = runtime(endpoints["port"], prefix).invoke_endpoint(
        EndpointName=name, ContentType="image/jpeg", Accept=accept, Body=body,
        CustomAttributes="trace=1", InferenceId="req-1")
    assert answer["ContentType"] == accept.split(";")[0]
    assert answer["InvokedProductionVariant"] == "AllTraffic"
    assert "CustomAttributes" not in answer  # the built-ins send none back, as SageMaker's
    deadline = time.time() + 10
    while "inference req-1 answered" not in _serve_logs(name) and time.time() < deadline:
        time.sleep(0.5)
    assert "inference req-1 answered" in _serve_logs(name)  # the caller's id, in the replica's log
    got, want = answer["Body"].read(), direct(endpoints[model], body, accept)
    if accept == "application/jsonlines":
        assert got.endswith(b"\n") and got.count(b"\n") == 1
    got, want = json.loads(got), json.loads(want)
    if accept == "application/jsonlines":  # {"prediction": ...}, as the JSON answer for OD
        assert set(got) == {"prediction"}
        got, want = (got["prediction"], want["prediction"]) if model == "ic" else (got, want)
    if model == "ic":
        assert np.allclose(got, want, atol=1e-5)
    else:
        key = "annotations" if accept.endswith("annotation=1") else "prediction"
        assert len(got[key]) == len(want[key]) > 0
        if key == "prediction":
            assert np.allclose(np.array(got[key]), np.array(want[key]), atol=1e-4)
        else:
            assert got["image_size"] == [{"width": 96, "height": 64, "depth": 3}]


def runtime_error(client, **kwargs):
    kwargs = {"EndpointName": "raysight", "ContentType": "image/png", "Body": encode("PNG"), **kwargs}
    with pytest.raises(ClientError) as e:
        client.invoke_endpoint(**kwargs)
    return e.value.response


def test_runtime_errors_are_the_ones_botocore_raises(endpoints):
    client = runtime(endpoints["port"])
    r = runtime_error(client, EndpointName="nope")
    assert r["Error"]["Code"] == "ValidationError" and "Endpoint nope" in r["Error"]["Message"]
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 400
    for kwargs, status, text in [({"Body": b"\x89PNG not really"}, 400, "cannot decode image"),
                                 ({"ContentType": "text/csv", "Body": b"1,2"}, 415, "unsupported Content-Type"),
                                 ({"Accept": "text/csv"}, 406, "unsupported Accept"),
                                 ({"Body": encode("GIF")}, 415, "GIF images are not accepted")]:
        r = runtime_error(client, **kwargs)
        assert r["Error"]["Code"] == "ModelError" and r["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert r["OriginalStatusCode"] == status and text in json.loads(r["OriginalMessage"])["message"]
        assert r["LogStreamArn"].startswith("arn:aws:logs:")
    for accept in ("application/json", "text/csv"):  # the size is checked before anything else
        r = runtime_error(client, Body=b"\xff" * (6 * 1024 * 1024 + 1), ContentType="image/jpeg", Accept=accept)
        assert r["Error"]["Code"] == "ValidationError" and "exceeds" in r["Error"]["Message"]
    r = runtime_error(runtime(endpoints["port"], "/slow"), EndpointName="slow")
    assert r["Error"]["Code"] == "ModelError" and r["OriginalStatusCode"] == 504
    assert client.invoke_endpoint(EndpointName="raysight", ContentType="image/png", Body=encode("PNG"))


def test_concurrent_requests_share_a_forward_pass_and_get_their_own_answers(endpoints):
    port, model = endpoints["port"], endpoints["ic"]
    bodies = [encode("PNG", seed=i, size=(20 + i, 30)) for i in range(24)]
    answers = [None] * len(bodies)
    batches = []

    def one(i):
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=bodies[i],
                                         headers={"Content-Type": "image/png"}, method="POST")
        with urllib.request.urlopen(request, timeout=60) as r:
            answers[i] = json.loads(r.read())
            batches.append(int(r.headers["X-Raysight-Batch-Size"]))

    for _ in range(3):  # until one batch held more than one request
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if max(batches) > 1:
            break
    assert max(batches) > 1, batches
    for body, answer in zip(bodies, answers):
        assert np.allclose(answer, json.loads(direct(model, body)), atol=1e-5)


def test_od_batches_get_each_image_its_own_detections(endpoints):
    port, model = endpoints["port"], endpoints["od"]
    bodies = [encode("JPEG", seed=i, size=(64 + 8 * i, 80)) for i in range(8)]
    answers = [None] * len(bodies)

    def one(i):
        answers[i] = json.loads(post(port, bodies[i], "image/jpeg", path="/od/invocations")[2])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for body, answer in zip(bodies, answers):
        want = json.loads(direct(model, body))["prediction"]
        assert len(answer["prediction"]) == len(want)
        assert np.allclose(np.array(answer["prediction"]), np.array(want), atol=1e-4)


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height, with almost no pixel data behind it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def cmyk_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.open(io.BytesIO(encode("JPEG"))).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("body,content_type,status,text", [
    (b"", "image/png", 400, "empty"),
    (encode("JPEG", size=(64, 48))[:300], "image/jpeg", 400, "cannot decode image"),
    (png_header(30000, 30000), "image/png", 400, "decompression bomb"),
    (encode("GIF"), "image/png", 415, "GIF images are not accepted"),
    (encode("TIFF"), "application/x-image", 415, "TIFF images are not accepted"),
    (encode("PNG"), "text/plain", 415, "unsupported Content-Type 'text/plain'"),
    (b"--x\r\nContent-Disposition: form-data; name=f\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data; boundary=x",
     415, "unsupported Content-Type"),
    (b"\xff" * (6 * 1024 * 1024 + 1), "image/jpeg", 413, "exceeds"),
])
def test_bad_requests_get_their_status_and_the_next_request_succeeds(endpoints, body, content_type, status, text):
    port = endpoints["port"]
    got, ctype, payload = post(port, body, content_type)
    assert got == status and ctype == "application/json" and text in json.loads(payload)["message"]
    assert post(port, encode("PNG"), "image/png")[0] == 200


def test_unsupported_accept_is_406(endpoints):
    status, _, payload = post(endpoints["port"], encode("PNG"), "image/png", accept="text/csv")
    assert status == 406 and "application/jsonlines" in json.loads(payload)["message"]


@pytest.mark.parametrize("body", [cmyk_jpeg(), encode("PNG", mode="I;16"), encode("PNG", mode="RGBA"),
                                  encode("PNG", mode="L"), encode("PNG", mode="P")],
                         ids=["cmyk-jpeg", "png-16bit", "rgba", "grayscale", "palette"])
def test_other_colour_modes_are_answered_as_training_converts_them(endpoints, body):
    status, _, payload = post(endpoints["port"], body, "image/png")
    assert status == 200
    assert np.allclose(json.loads(payload), json.loads(direct(endpoints["ic"], body)), atol=1e-5)


def test_routing_errors_and_execution_parameters(endpoints):
    port = endpoints["port"]
    for method, path, status in [("GET", "/nothing-here", 404), ("GET", "/invocations", 405), ("POST", "/ping", 405)]:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method, data=b"" if method == "POST"
                                         else None)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(request, timeout=10)
        assert e.value.code == status and "message" in json.loads(e.value.read())
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/execution-parameters", timeout=10) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("application/json")
        assert json.loads(r.read()) == {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD",
                                        "MaxPayloadInMB": 6}


def raw_request(port, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(head + body)
    return sock


def test_an_oversized_body_is_refused_from_its_header_before_it_is_sent(endpoints):
    port = endpoints["port"]
    head = (f"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
            f"Content-Length: {64 * 1024 * 1024}\r\n\r\n").encode()
    sock = raw_request(port, head, b"\xff" * 1024)  # 1 KiB of a declared 64 MiB
    reply = b""
    while b"exceeds" not in reply:  # the head and the body may come in separate segments
        chunk = sock.recv(65536)
        if not chunk:
            break
        reply += chunk
    sock.close()
    reply = reply.decode(errors="replace")
    assert reply.startswith("HTTP/1.1 413") and "exceeds" in reply


def test_a_slow_client_does_not_block_the_replica(endpoints):
    port = endpoints["port"]
    head = b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 100000\r\n\r\n"
    stalled = raw_request(port, head, b"\x89PNG")  # and never the rest
    try:
        tic = time.perf_counter()
        for _ in range(5):
            assert post(port, encode("PNG"), "image/png")[0] == 200
        assert time.perf_counter() - tic < 20
    finally:
        stalled.close()


def test_an_answer_past_the_timeout_is_a_504_and_the_replica_stays_up(endpoints):
    port = endpoints["port"]
    status, _, payload = post(port, encode("PNG"), "image/png", path="/slow/invocations")
    assert status == 504 and "did not answer within" in json.loads(payload)["message"]
    assert ping(port, "/slow") == 200
    assert post(port, encode("PNG"), "image/png", path="/slow/invocations")[0] == 504


def test_multi_model_endpoint_picks_the_target_model(endpoints, tmp_path):
    port, root = endpoints["port"], endpoints["mme"]
    client = runtime(port, "/mme")
    body = encode("PNG", seed=5)
    for target, classes in [("digits-v1.tar.gz", 4), ("v2/digits-v2.tar.gz", 3), ("digits-v1.tar.gz", 4)]:
        answer = client.invoke_endpoint(EndpointName="multi", ContentType="image/png", Body=body, TargetModel=target)
        probs = json.loads(answer["Body"].read())
        assert len(probs) == classes
        assert np.allclose(probs, json.loads(direct(os.path.join(root, target), body)), atol=1e-5)
    for headers, status, text in [({}, 400, "X-Amzn-SageMaker-Target-Model"),
                                  ({"X-Amzn-SageMaker-Target-Model": "nope.tar.gz"}, 404, "is not under"),
                                  ({"X-Amzn-SageMaker-Target-Model": "../ic.tar.gz"}, 400, "relative path"),
                                  ({"X-Amzn-SageMaker-Target-Model": "digits-v1.zip"}, 400, ".tar.gz")]:
        got, _, payload = post(port, body, "image/png", path="/mme/invocations", headers=headers)
        assert got == status and text in json.loads(payload)["message"]
    # One model per replica: every switch of target loaded the model again (LRU of one).
    logs = _serve_logs("multi")
    assert logs.count("digits-v1.tar.gz in") >= 2 and logs.count("digits-v2.tar.gz in") >= 1


def test_a_hostile_model_file_is_refused_and_ping_says_why(endpoints, tmp_path):
    """A model.tar.gz whose params file is a symlink to /etc/passwd: the replica refuses it, `/ping`
    answers 503 with the reason, and the other endpoints on the proxy keep answering."""
    import tarfile

    from ray import serve

    from tests.test_security import member, tarball

    bad = tarball(tmp_path / "bad.tar.gz", [member("model-0001.params", kind=tarfile.SYMTYPE, link="/etc/passwd")])
    ready = deploy(bad, "hostile", "/hostile")
    try:
        assert "link or a special file" in ready["error"], ready
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{endpoints['port']}/hostile/ping", timeout=10)
        assert info.value.code == 503 and "link or a special file" in json.loads(info.value.read())["message"]
        assert ping(endpoints["port"]) == 200
    finally:
        serve.delete("hostile")


def _serve_logs(app_name: str) -> str:
    import glob

    import ray

    folder = os.path.join(ray._private.worker._global_node.get_session_dir_path(), "logs", "serve")
    text = ""
    for path in glob.glob(os.path.join(folder, f"replica_{app_name}_*.log")):
        with open(path, errors="replace") as f:
            text += f.read()
    return text


@pytest.mark.parametrize("args,text", [(["missing.tar.gz"], "model 'missing.tar.gz' does not exist"),
                                       (["m.tar.gz", "--name", "bad_name"], "name 'bad_name' must match"),
                                       (["m.tar.gz", "--max-batch-size", "-1"], "max_batch_size must be ≥ 0"),
                                       (["m.tar.gz", "--min-replicas", "2"], "give min_replicas and max_replicas")])
def test_serve_cli_refuses_bad_settings_in_one_line_before_starting_ray(tmp_path, args, text):
    from tests.conftest import run_cli

    (tmp_path / "m.tar.gz").write_bytes(b"x")
    result = run_cli("serve", *[str(tmp_path / a) if a == "m.tar.gz" else a for a in args], env={"RAY_ADDRESS": ""})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("ClientError: ") and text in lines[0], \
        result.stderr


@pytest.mark.slow
def test_serve_cli_answers_boto3_and_drains_in_flight_requests_on_sigterm(tmp_path):
    """`raysight serve --name` in its own process, with its own local Ray: SIGTERM while 16
    clients are mid-request answers every request already accepted, then exits 0."""
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    model = make_model(tmp_path / "model.tar.gz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-m", "raysight", "serve", model, "--port", str(port), "--name", "digits",
                             "--max-batch-size", "4"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    outcomes, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            sent = time.time()
            try:
                outcomes.append((sent, post(port, encode("PNG"), "image/png")[0]))
            except (OSError, http.client.HTTPException) as exc:  # once the server is going: refused or cut
                outcomes.append((sent, type(getattr(exc, "reason", exc)).__name__))
                return

    try:
        deadline = time.time() + 180
        while ping(port) != 200:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "endpoint never became ready"
            time.sleep(1)
        answer = runtime(port).invoke_endpoint(EndpointName="digits", ContentType="image/png", Body=encode("PNG"))
        assert len(json.loads(answer["Body"].read())) == 4
        assert runtime_error(runtime(port), EndpointName="raysight")["Error"]["Code"] == "ValidationError"
        clients = [threading.Thread(target=client) for _ in range(16)]
        for t in clients:
            t.start()
        time.sleep(3)
        signalled = time.time()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
    for t in clients:
        t.join(timeout=60)
    assert proc.returncode == 0, out
    assert "Serving" in out and "as endpoint 'digits'" in out and "Stopped." in out
    before = [o for sent, o in outcomes if sent < signalled]
    assert len(before) > 16 and set(before) == {200}, sorted(set(map(str, before)))


def test_serve_settings_parse_from_strings_as_serve_run_passes_them():
    """`serve run raysight.serve.app:build key=value` hands every setting over as a string."""
    from raysight.errors import ClientError as BadRequest
    from raysight.serve.options import ServeOptions

    opts = ServeOptions.from_args({"model": "m.tar.gz", "min_replicas": "1", "max_replicas": "3",
                                   "target_ongoing_requests": "2", "multi_model": "true", "cpus_per_replica": "0.5"})
    assert opts.deployment()["autoscaling_config"] == {"min_replicas": 1, "max_replicas": 3,
                                                       "target_ongoing_requests": 2.0}
    assert isinstance(opts.min_replicas, int) and opts.multi_model is True
    assert opts.batch_size() == 1 and ServeOptions(gpus_per_replica=0.5).batch_size() == 16
    for args, text in [({"replicas": "two"}, "replicas='two' must be of type int"),
                       ({"bogus": 1}, "unknown endpoint setting(s) ['bogus']")]:
        with pytest.raises(BadRequest) as e:
            ServeOptions.from_args(args)
        assert text in str(e.value)
