"""Locked down (issue 28): what listens, what a caller may touch, the wire, hostile model
files. A real `raysight api` on a Ray of its own, real botocore signing, real sockets."""
import datetime
import http.client
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError as BotoClientError

from raysight import artifacts, confine, storage
from raysight.errors import ClientError
from tests.conftest import ROOT, free_port, tiny_request
from tests.test_api import KEY, SECRET, client, credentials_file, start_api

LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listeners(pids) -> dict[str, set[str]]:
    """address → names of the processes listening there, for these pids (from /proc/net via psutil)."""
    import ray  # noqa: F401 - Ray's bundled psutil
    import psutil

    found: dict[str, set[str]] = {}
    for pid in pids:
        try:
            proc = psutil.Process(pid)
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    found.setdefault(f"{conn.laddr.ip}:{conn.laddr.port}", set()).add(proc.name())
        except psutil.Error:
            continue
    return found


def tree(pid: int) -> list[int]:
    import ray  # noqa: F401
    import psutil

    try:
        root = psutil.Process(pid)
        return [pid] + [p.pid for p in root.children(recursive=True)]
    except psutil.Error:
        return []


def beyond_loopback(found: dict[str, set[str]]) -> list[str]:
    return [f"{addr} ({', '.join(sorted(names))})" for addr, names in found.items()
            if addr.rsplit(":", 1)[0] not in LOOPBACK]


def cluster_pids(state) -> list[int]:
    """The processes of the local Ray `raysight api` started for this state folder (its temp dir)."""
    import ray  # noqa: F401
    import psutil

    temp_dir = json.loads((state / "cluster.json").read_text())["temp_dir"]
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(temp_dir in a for a in p.info["cmdline"] or [])]


# --- 1. the network surface: a local Ray as train/tune/transform/serve start it ---------------
@pytest.mark.slow
def test_a_local_ray_and_its_serve_proxy_listen_on_loopback_only(tmp_path):
    """`cluster.ensure_ray`, which `raysight train|tune|transform|serve` all call without
    RAY_ADDRESS, plus Serve's proxy as `raysight serve` starts it: every listening socket of
    the process tree (GCS, raylet, dashboard and agents, workers, proxy) is on loopback."""
    port = free_port()
    script = ("import sys; from raysight.cluster import ensure_ray; ensure_ray(); from ray import serve; "
              f"serve.start(http_options={{'host': '127.0.0.1', 'port': {port}}}); print('up', flush=True); "
              "sys.stdin.read(); serve.shutdown()")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        time.sleep(2)  # agents finish binding
        found = listeners(tree(proc.pid))
        assert f"127.0.0.1:{port}" in found, found  # Serve's proxy
        assert any("dashboard" in " ".join(n).lower() or "DashboardA" in " ".join(n) for n in found.values()), found
        assert len(found) >= 6, found  # GCS, raylet, dashboard, agents, proxy...: really observed
        assert not beyond_loopback(found), beyond_loopback(found)
    finally:
        proc.stdin.close()
        proc.wait(60)


# --- a raysight api on the session's Ray, and one on a Ray of its own -------------------------
@pytest.fixture(scope="module")
def guarded_api(ray_cluster, tmp_path_factory):
    """`raysight api` on the session's Ray (RAY_ADDRESS) with one --local-root."""
    folder = tmp_path_factory.mktemp("guarded-api")
    allowed = folder / "allowed"
    allowed.mkdir()
    state = folder / "state"
    port = free_port()
    proc, url = start_api(state, credentials_file(folder), port, local_roots=[allowed])
    yield {"url": url, "proc": proc, "state": state, "allowed": allowed, "folder": folder, "port": port}
    proc.terminate()
    proc.wait(30)


@pytest.fixture(scope="module")
def own_api(tmp_path_factory):
    """`raysight api` without RAY_ADDRESS: it starts its own detached Ray."""
    folder = tmp_path_factory.mktemp("own-api")
    state = folder / "state"
    port = free_port()
    proc, url = start_api(state, credentials_file(folder), port, env={"RAY_ADDRESS": ""})
    yield {"url": url, "proc": proc, "state": state, "port": port}
    proc.terminate()
    proc.wait(30)
    temp_dir = json.loads((state / "cluster.json").read_text())["temp_dir"]
    stopped = subprocess.run([sys.executable, "-m", "raysight", "api", "stop", "--state", str(state)], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert not os.path.exists(temp_dir), f"raysight api stop left {temp_dir} behind"


@pytest.mark.slow
def test_the_api_and_its_own_ray_listen_on_loopback_only_and_api_stop_removes_its_folder(own_api):
    found = listeners(tree(own_api["proc"].pid) + cluster_pids(own_api["state"]))
    assert f"127.0.0.1:{own_api['port']}" in found
    assert any("gcs_server" in names for names in found.values()), found
    assert any("raylet" in names for names in found.values()), found
    assert not beyond_loopback(found), beyond_loopback(found)


def test_a_second_api_on_the_same_state_exits_2_naming_the_first(guarded_api):
    second = subprocess.run([sys.executable, "-m", "raysight", "api", "--port", str(free_port()), "--state",
                             str(guarded_api["state"]), "--credentials", str(guarded_api["folder"] / "credentials")],
                            cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ClientError: ") and f"pid {guarded_api['proc'].pid}" in lines[0], \
        lines


def test_listening_beyond_loopback_is_a_choice_that_opens_only_that_port(ray_cluster, tmp_path):
    """`raysight api --host 0.0.0.0`: its own port on every interface, asked for; nothing else."""
    port = free_port()
    proc, _ = start_api(tmp_path / "state", credentials_file(tmp_path), port, extra=["--host", "0.0.0.0"])
    try:
        found = listeners(tree(proc.pid))
        assert found == {f"0.0.0.0:{port}": found[f"0.0.0.0:{port}"]}, found
    finally:
        proc.terminate()
        proc.wait(30)


# --- 3. the wire ----------------------------------------------------------------------------
def signed(url, target="SageMaker.ListTrainingJobs", body=b"{}", key=KEY, secret=SECRET, when=None):
    """(headers, body) signed as botocore signs them, optionally at another time."""
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    signer = SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1")
    if when is None:
        signer.add_auth(request)
    else:
        import botocore.auth

        saved = botocore.auth.get_current_datetime
        botocore.auth.get_current_datetime = lambda: when
        try:
            signer.add_auth(request)
        finally:
            botocore.auth.get_current_datetime = saved
    return dict(request.headers), body


def post(url, headers, body):
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/", data=body, headers=headers, method="POST"),
                                    timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_tampered_swapped_dated_unknown_and_unsigned_requests_get_403(guarded_api):
    url = guarded_api["url"]
    headers, body = signed(url)
    assert post(url, headers, body)[0] == 200  # the control case
    assert post(url, headers, b'{"MaxResults": 1}')[1]["__type"] == "InvalidSignatureException"  # tampered body
    swapped = {**headers, "X-Amz-Target": "SageMaker.DeleteEndpoint"}
    assert post(url, swapped, body)[1]["__type"] == "InvalidSignatureException"
    # x-amz-target left out of the signed headers: refused even though the signature holds
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={"Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(KEY, SECRET), "sagemaker", "us-east-1").add_auth(request)
    status, answer = post(url, {**dict(request.headers), "X-Amz-Target": "SageMaker.ListTrainingJobs"}, body)
    assert (status, answer["__type"]) == (403, "InvalidSignatureException") and "x-amz-target" in answer["message"]
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    for minutes, text in ((6, "not yet current"), (-6, "Signature expired")):
        status, answer = post(url, *signed(url, when=now + datetime.timedelta(minutes=minutes)))
        assert (status, answer["__type"]) == (403, "InvalidSignatureException") and text in answer["message"]
    assert post(url, *signed(url, when=now - datetime.timedelta(minutes=4)))[0] == 200  # inside the window
    assert post(url, *signed(url, key="AKIDNOBODY"))[1]["__type"] == "UnrecognizedClientException"
    assert post(url, {"X-Amz-Target": "SageMaker.ListTrainingJobs"}, body)[1]["__type"] == \
        "MissingAuthenticationTokenException"
    # botocore parses the same codes
    with pytest.raises(BotoClientError) as info:
        client(url, key="AKIDNOBODY").list_training_jobs()
    assert info.value.response["Error"]["Code"] == "UnrecognizedClientException"


def test_an_unauthenticated_1_gib_body_gets_413_unread_and_memory_stays_flat(guarded_api):
    import ray  # noqa: F401
    import psutil

    server = psutil.Process(guarded_api["proc"].pid)
    before = server.memory_info().rss
    for declared in (True, False):  # Content-Length, then chunked with none
        conn = http.client.HTTPConnection("127.0.0.1", guarded_api["port"], timeout=30)
        conn.putrequest("POST", "/")
        conn.putheader("X-Amz-Target", "SageMaker.CreateTrainingJob")
        conn.putheader("Content-Length" if declared else "Transfer-Encoding", str(1 << 30) if declared else "chunked")
        conn.endheaders()
        chunk = b"x" * (1 << 20)
        sent = 0
        try:
            while sent < (1 << 30):
                conn.send(chunk if declared else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what is under test
        response = conn.getresponse()
        assert response.status == 413, response.read()
        assert json.loads(response.read())["__type"] == "ValidationException"
        assert sent < 256 << 20, sent  # the server closed the connection instead of reading on
        conn.close()
    assert server.memory_info().rss - before < 64 << 20, (before, server.memory_info().rss)
    assert post(guarded_api["url"], *signed(guarded_api["url"]))[0] == 200  # and it still serves


def test_an_internal_failure_answers_a_request_id_and_logs_the_text(capfd):
    import threading

    import uvicorn

    from raysight.api import server

    class Broken:
        def handle(self, *args):
            raise RuntimeError("secret detail /etc/raysight/key")

    port = free_port()
    running = uvicorn.Server(uvicorn.Config(server.app(Broken()), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not running.started:
            assert time.time() < deadline
            time.sleep(0.05)
        try:
            urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", data=b"{}", method="POST",
                                                          headers={"X-Amz-Target": "SageMaker.X"}), timeout=10)
        except urllib.error.HTTPError as exc:
            status, request_id, body = exc.code, exc.headers["x-amzn-RequestId"], json.loads(exc.read())
    finally:
        running.should_exit = True
        thread.join(10)
    assert status == 500 and body["__type"] == "InternalFailure"
    assert "secret" not in body["message"] and request_id in body["message"]
    logged = capfd.readouterr().err
    assert "secret detail" in logged and request_id in logged


# --- 2. what a caller may touch ---------------------------------------------------------------
def digits_in(folder, name="data"):
    from raysight.sample_data import digits

    root = str(folder / name)
    return root, digits.export(root, limit=20)


def test_locations_outside_the_local_roots_are_refused_naming_the_field_and_nothing_is_created(guarded_api,
                                                                                              tmp_path):
    sm = client(guarded_api["url"])
    allowed, outside = guarded_api["allowed"], tmp_path
    root, counts = digits_in(allowed, "in")
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    cases = [  # (field to change, value, field named)
        ("out", str(outside / "out"), "OutputDataConfig.S3OutputPath"),
        ("out", str(allowed / ".." / "elsewhere"), "OutputDataConfig.S3OutputPath"),
        ("out", str(allowed / "escape" / "out"), "OutputDataConfig.S3OutputPath"),
        ("train", "file:///etc", "InputDataConfig.1.DataSource.S3DataSource.S3Uri"),
        ("checkpoint", str(outside / "ckpt"), "CheckpointConfig.S3Uri"),
    ]
    for i, (what, value, field) in enumerate(cases):
        request = tiny_request(root, str(allowed / "out"), f"outside-{i}", counts)
        if what == "out":
            request["OutputDataConfig"]["S3OutputPath"] = value
        elif what == "train":
            request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] = value
        else:
            request["CheckpointConfig"] = {"S3Uri": value}
        with pytest.raises(BotoClientError) as info:
            sm.create_training_job(**request)
        error = info.value.response["Error"]
        assert error["Code"] == "ValidationException" and f"at '{field}'" in error["Message"], (field, error)
        assert "outside the local folders" in error["Message"], error
    # an augmented manifest inside the root whose source-ref climbs out of it
    (allowed / "manifest").mkdir()
    (allowed / "manifest" / "train.manifest").write_text(
        json.dumps({"source-ref": "../../" + os.path.relpath("/etc/hostname", "/"), "class": 1}) + "\n")
    request = tiny_request(root, str(allowed / "out"), "outside-manifest", counts)
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"].update(
        S3DataType="AugmentedManifestFile", S3Uri=str(allowed / "manifest" / "train.manifest"))
    request["InputDataConfig"][0]["ContentType"] = "application/x-recordio"
    request["InputDataConfig"][0]["RecordWrapperType"] = "RecordIO"
    request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["AttributeNames"] = ["source-ref", "class"]
    with pytest.raises(BotoClientError) as info:
        sm.create_training_job(**request)
    assert "manifest entry 1" in info.value.response["Error"]["Message"]
    with pytest.raises(BotoClientError) as info:  # a model outside
        sm.create_model(ModelName="outside", ExecutionRoleArn="arn:aws:iam::000000000000:role/r", PrimaryContainer={
            "Image": "image-classification", "ModelDataUrl": str(outside / "model.tar.gz")})
    assert "at 'PrimaryContainer.ModelDataUrl'" in info.value.response["Error"]["Message"]
    assert not sm.list_training_jobs()["TrainingJobSummaries"] and not sm.list_models()["Models"]
    assert not (outside / "out").exists() and not (allowed / "out").exists()


@pytest.mark.slow
def test_a_job_reads_nothing_outside_the_roots_through_a_symlink_in_its_data(guarded_api):
    """The API passes the channel folder (inside); an image in it is a symlink to a file outside.
    The Ray Job (confined through its environment) fails with one ClientError naming it."""
    sm = client(guarded_api["url"])
    allowed = guarded_api["allowed"]
    root, counts = digits_in(allowed, "linked")
    victim = guarded_api["folder"] / "secret.png"
    first = sorted((allowed / "linked" / "train").rglob("*.png"))[0]
    victim.write_bytes(first.read_bytes())
    first.unlink()
    first.symlink_to(victim)
    sm.create_training_job(**tiny_request(root, str(allowed / "out"), "linked", counts))
    from botocore.exceptions import WaiterError

    with pytest.raises(WaiterError, match="Failed"):  # the waiter's word for a job that failed
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="linked",
                                                               WaiterConfig={"Delay": 2, "MaxAttempts": 150})
    described = sm.describe_training_job(TrainingJobName="linked")
    assert described["TrainingJobStatus"] == "Failed"
    reason = described["FailureReason"]
    assert reason.startswith("ClientError: ") and "outside the local folders" in reason and str(victim) in reason, reason
    assert not (allowed / "out" / "linked" / "output" / "model.tar.gz").exists()


def test_confinement_resolves_dots_and_symlinks_and_empty_means_s3_only(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("secret")
    (allowed / "link.txt").symlink_to(tmp_path / "secret.txt")
    monkeypatch.delenv(confine.ROOTS_ENV, raising=False)
    assert storage.read_bytes(str(tmp_path / "secret.txt")) == b"secret"  # the CLI's user: no limit
    monkeypatch.setenv(confine.ROOTS_ENV, confine.env_value([str(allowed)]))
    assert storage.read_bytes(str(allowed / "ok.txt")) == b"ok"
    for path in (tmp_path / "secret.txt", allowed / ".." / "secret.txt", allowed / "link.txt"):
        with pytest.raises(ClientError, match="outside the local folders"):
            storage.read_bytes(str(path))
    with pytest.raises(ClientError, match="outside"):
        storage.write_bytes(f"file://{tmp_path}/new.txt", b"x")
    assert not (tmp_path / "new.txt").exists()
    monkeypatch.setenv(confine.ROOTS_ENV, "")
    with pytest.raises(ClientError, match="accepts only s3://"):
        storage.read_bytes(str(allowed / "ok.txt"))
    assert storage.worker_env()[confine.ROOTS_ENV] == ""  # travels to Ray workers, even empty


# --- 4. model files -----------------------------------------------------------------------------
def tarball(path, members, meta=None):
    """A model.tar.gz of `members` (TarInfo, bytes or None), with raysight's metadata first."""
    meta = meta or {"algorithm": "image-classification", "params": "model-0001.params", "epoch": 0,
                    "hyperparameters": {}}
    with tarfile.open(path, "w:gz") as tar:
        blob = json.dumps(meta).encode()
        info = tarfile.TarInfo(artifacts.META)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def member(name, data=b"", kind=tarfile.REGTYPE, link=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data) if kind == tarfile.REGTYPE else 0
    return info, data if kind == tarfile.REGTYPE else None


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {Payload.marker}",))


@pytest.mark.parametrize("case, text", [
    ("dotdot", "leaves the folder"), ("absolute", "absolute path"), ("symlink", "link or a special file"),
    ("device", "link or a special file"), ("pickle", "not a weights-only"), ("missing-params", "not a file of"),
])
def test_hostile_model_tarballs_are_refused_with_a_client_error(tmp_path, case, text):
    Payload.marker = str(tmp_path / "pwned")
    members = {
        "dotdot": [member("../../escaped.txt", b"x")],
        "absolute": [member(str(tmp_path / "abs.txt"), b"x")],
        "symlink": [member("model-0001.params", kind=tarfile.SYMTYPE, link="/etc/passwd")],
        "device": [member("model-0001.params", kind=tarfile.CHRTYPE)],
        "pickle": [member("model-0001.params", pickle.dumps(Payload()))],
        "missing-params": [member("other.params", b"x")],
    }[case]
    uri = tarball(tmp_path / "m.tar.gz", members)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(ClientError, match=text):  # what load_model and the model channel do
        artifacts.load_params(str(dest), artifacts.extract(uri, str(dest)))
    assert not os.path.exists(Payload.marker) and not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "abs.txt").exists()


def test_a_gzip_bomb_and_an_oversized_tarball_are_refused_before_decompressing(tmp_path, monkeypatch):
    import gzip

    # 1 GiB of zeros declared in one member: about 1 MiB of gzip
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as gz:
        meta = json.dumps({"algorithm": "image-classification", "params": "model-0001.params"}).encode()
        info = tarfile.TarInfo(artifacts.META)
        info.size = len(meta)
        gz.write(info.tobuf() + meta + b"\0" * (-len(meta) % 512))
        info = tarfile.TarInfo("model-0001.params")
        info.size = 1 << 30
        gz.write(info.tobuf())
        zeros = b"\0" * (8 << 20)
        for _ in range(128):
            gz.write(zeros)
    assert os.path.getsize(path) < 8 << 20
    dest = tmp_path / "dest"
    dest.mkdir()
    tic = time.perf_counter()
    with pytest.raises(ClientError, match="gzip bomb"):
        artifacts.extract(str(path), str(dest))
    assert time.perf_counter() - tic < 5 and not (dest / "model-0001.params").exists()
    monkeypatch.setenv(artifacts.MAX_MODEL_BYTES_ENV, "1000")
    with pytest.raises(ClientError, match="over the 1000-byte bound"):
        artifacts.extract(str(path), str(dest))


def test_the_model_channel_names_a_hostile_model_in_one_client_error(tmp_path):
    """Training's `model` channel (incremental training) with a symlinked params file."""
    from raysight import algorithms
    from raysight.hyperparams import parse_hyperparameters
    from tests.conftest import parse_job
    from tests.test_ic_complete import model_channel

    (tmp_path / "model").mkdir()
    tarball(tmp_path / "model" / "model.tar.gz",
            [member("model-0001.params", kind=tarfile.SYMTYPE, link="/etc/passwd")])
    root, counts = digits_in(tmp_path)
    request = tiny_request(root, str(tmp_path / "out"), "hostile", counts)
    request["InputDataConfig"].append(model_channel(str(tmp_path / "model")))
    ic = algorithms.get("image-classification")
    job = parse_job(request)
    with pytest.raises(ClientError) as info:
        ic.initial_state(job, parse_hyperparameters(ic.hyperparameters, job.hyperparameters))
    assert str(info.value).startswith("ClientError: model channel: ") and "link or a special file" in str(info.value)
