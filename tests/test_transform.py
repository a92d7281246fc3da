"""`raysight transform`: CreateTransformJob requests on Ray Data, locally and on S3 (moto), for
both algorithms; every .out is what the endpoint answers for that object."""
import gzip
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import BUCKET, run_cli, write_json
from tests.test_serve import OD, deploy, encode, make_model, post, same_answer


def transform_request(name, input_uri, output_uri, **extra) -> dict:
    request = {"TransformJobName": name, "ModelName": "digits",
               "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": input_uri}},
                                  "ContentType": "application/x-image", "SplitType": "None"},
               "TransformOutput": {"S3OutputPath": output_uri, "Accept": "application/json"},
               "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
               "MaxConcurrentTransforms": 2}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(request.get(key), dict):
            request[key] = {**request[key], **value}
        else:
            request[key] = value
    return request


def noise_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def check_shape(record: dict, operation: str) -> None:
    """Every field of `record` is a member of botocore's output shape for `operation`, and every
    required member is there."""
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).output_shape
    assert set(record) <= set(shape.members), set(record) - set(shape.members)
    assert set(shape.required_members) <= set(record), set(shape.required_members) - set(record)


@pytest.fixture(scope="module")
def endpoint(ray_cluster, tmp_path_factory):
    """The IC endpoint the transform output is compared with, at /ic on its own proxy."""
    from ray import serve

    from tests.conftest import free_port

    model = make_model(tmp_path_factory.mktemp("tm") / "ic.tar.gz")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    assert deploy(model, "ic", "/ic")["error"] is None
    yield port, model
    serve.shutdown()


def test_local_transform_writes_what_the_endpoint_answers_and_lists_failed_objects(endpoint, tmp_path):
    port, model = endpoint
    images = tmp_path / "in"
    (images / "sub").mkdir(parents=True)
    bodies = {f"img{i}.png" if i % 2 else f"sub/img{i}.jpg": encode("PNG" if i % 2 else "JPEG", seed=i,
                                                                   size=(20 + i, 30)) for i in range(10)}
    bodies["bad.jpg"] = b"not an image at all"
    bodies["sub/huge.png"] = noise_png(800)  # over MaxPayloadInMB=1
    for key, body in bodies.items():
        (images / key).write_bytes(body)
    out = tmp_path / "out"
    request = write_json(tmp_path / "t.json", transform_request("digits-transform", str(images), str(out),
                                                                MaxPayloadInMB=1))
    result = run_cli("transform", request, "--model", model)
    assert result.returncode == 1, result.stdout + result.stderr
    record = json.loads((out / "transform-job.json").read_text())
    check_shape(record, "DescribeTransformJob")
    assert record["TransformJobStatus"] == "Failed"
    reason = record["FailureReason"]
    assert reason.startswith("ClientError: 2 of 12 object(s) failed") and "bad.jpg" in reason
    assert "sub/huge.png" in reason and "exceeds MaxPayloadInMB=1" in reason
    assert "failed: bad.jpg" in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert "transformed 12/12 object(s)" in result.stdout and "2 failed" in result.stdout  # the log's progress
    assert not (out / "bad.jpg.out").exists() and not (out / "sub" / "huge.png.out").exists()
    for key, body in bodies.items():
        if key in ("bad.jpg", "sub/huge.png"):
            continue
        answer = json.loads((out / f"{key}.out").read_bytes())
        status, _, payload = post(port, body, "application/x-image", path="/ic/invocations")
        assert status == 200 and same_answer(answer, json.loads(payload), atol=1e-5), key


@pytest.mark.slow
def test_od_transform_on_s3_from_a_manifest_with_gzip_and_json_lines(ray_cluster, s3, tmp_path):
    model = make_model(tmp_path / "od.tar.gz", OD.name)
    keys = [f"shapes/in/a/{i}.jpg" for i in range(5)]
    for i, key in enumerate(keys):
        s3.put_object(Bucket=BUCKET, Key=key + ".gz", Body=gzip.compress(encode("JPEG", seed=i, size=(90, 60))))
    manifest = [{"prefix": f"s3://{BUCKET}/shapes/in/"}] + [k.removeprefix("shapes/in/") + ".gz" for k in keys[:4]]
    s3.put_object(Bucket=BUCKET, Key="shapes/manifest.json", Body=json.dumps(manifest).encode())
    request = write_json(tmp_path / "t.json", transform_request(
        "shapes-transform", f"s3://{BUCKET}/shapes/manifest.json", f"s3://{BUCKET}/shapes/out",
        TransformInput={"DataSource": {"S3DataSource": {"S3DataType": "ManifestFile",
                                                        "S3Uri": f"s3://{BUCKET}/shapes/manifest.json"}},
                        "ContentType": "image/jpeg", "CompressionType": "Gzip", "SplitType": "None"},
        TransformOutput={"S3OutputPath": f"s3://{BUCKET}/shapes/out", "Accept": "application/jsonlines",
                         "AssembleWith": "Line"}))
    result = run_cli("transform", request, "--model", model)
    assert result.returncode == 0, result.stdout + result.stderr
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="shapes/out/")["Contents"]
                    if not o["Key"].endswith("/"))  # pyarrow's folder markers
    assert listed == sorted([f"shapes/out/a/{i}.jpg.gz.out" for i in range(4)] + ["shapes/out/transform-job.json"])
    from tests.test_serve import direct

    for i in range(4):
        body = s3.get_object(Bucket=BUCKET, Key=f"shapes/out/a/{i}.jpg.gz.out")["Body"].read()
        assert body.endswith(b"\n") and body.count(b"\n") == 1
        want = direct(model, encode("JPEG", seed=i, size=(90, 60)), "application/jsonlines")
        assert same_answer(json.loads(body), json.loads(want))
    record = json.loads(s3.get_object(Bucket=BUCKET, Key="shapes/out/transform-job.json")["Body"].read())
    check_shape(record, "DescribeTransformJob")
    assert record["TransformJobStatus"] == "Completed" and record["MaxConcurrentTransforms"] == 2


@pytest.mark.parametrize("change,text", [
    ({"TransformInput": {"SplitType": "Line"}}, "SplitType 'Line' is not supported"),
    ({"TransformOutput": {"Accept": "text/csv"}}, "Accept 'text/csv' must be one of"),
    ({"MaxPayloadInMB": 0}, "MaxPayloadInMB 0 must be in [1, 100]"),
    ({"MaxConcurrentTransforms": 20, "MaxPayloadInMB": 6}, "must be ≤ 100"),
    ({"TransformJobName": "bad_name"}, "TransformJobName 'bad_name' must match"),
    ({"Tagz": []}, "unknown field 'Tagz'"),
])
def test_invalid_requests_are_refused_in_one_line_before_any_work(tmp_path, change, text):
    request = write_json(tmp_path / "t.json", transform_request("t", str(tmp_path), str(tmp_path / "out"), **change))
    result = run_cli("transform", request, "--model", str(tmp_path / "m.tar.gz"), env={"RAY_ADDRESS": ""})
    assert result.returncode == 2 and text in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ClientError: ")
    assert not os.path.exists(tmp_path / "out")
