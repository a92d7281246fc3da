"""Channel content types as SageMaker takes them (issue 34): every spelling AWS's own examples
use, RecordIO with parameters, and one ClientError line for a type that names no format. The
channels are built by the SageMaker SDK v2 itself (`TrainingInput(content_type=...).config`, what
`Estimator.fit` sends) and checked by the CLI, as the API checks a CreateTrainingJob."""
import json
import os
import subprocess

import pytest

from raysight import algorithms
from raysight.transform.request import parse as parse_transform
from tests.conftest import parse_job, run_cli, tiny_request, write_json
from tests.test_sdk_example import SDK_PYTHON
from tests.test_transform import transform_request

IMAGE_TYPES = ["application/x-image", "application/jpeg", "application/x-jpeg", "image/jpeg", "image/png",
               "image/x-png", "Image/JPEG"]
RECORDIO_TYPES = ["application/x-recordio", "application/x-recordio; label-format=class-id"]
SDK_CHANNEL = ("import json, sys; from sagemaker.inputs import TrainingInput; "
               "print(json.dumps([TrainingInput(sys.argv[1], content_type=c).config for c in sys.argv[2:]]))")


@pytest.fixture(scope="module")
def sdk_channel():
    """content type → the channel config the SDK builds for it (as `fit` sends it, less its name)."""
    assert os.path.exists(SDK_PYTHON), "the SageMaker SDK's environment is missing: run `make install`"
    types = IMAGE_TYPES + RECORDIO_TYPES
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "SAGEMAKER_SUPPRESS_V2_WARNING": "1"}
    out = subprocess.run([SDK_PYTHON, "-c", SDK_CHANNEL, "s3://placeholder/", *types], capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    return dict(zip(types, json.loads(out.stdout.strip().splitlines()[-1])))


def with_channels(request: dict, config: dict, names=None) -> dict:
    """`request` whose channels (or those `names`, at `names[name]`) are `config` as the SDK built it."""
    request = json.loads(json.dumps(request))
    uris = names or {c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"] for c in request["InputDataConfig"]}
    request["InputDataConfig"] = []
    for name, uri in uris.items():
        channel = {"ChannelName": name, **json.loads(json.dumps(config))}
        channel["DataSource"]["S3DataSource"]["S3Uri"] = uri
        request["InputDataConfig"].append(channel)
    return request


@pytest.fixture(scope="module")
def digits_request(digits_small, tmp_path_factory):
    root, counts = digits_small
    return tiny_request(root, str(tmp_path_factory.mktemp("ct-out")), "content-types", counts)


@pytest.mark.parametrize("content_type", IMAGE_TYPES)
def test_image_channels_take_every_image_type_the_sdk_sends(digits_request, sdk_channel, tmp_path, content_type):
    assert sdk_channel[content_type]["ContentType"] == content_type  # the SDK passes it verbatim
    request = with_channels(digits_request, sdk_channel[content_type])
    result = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    assert result.returncode == 0 and "is valid" in result.stdout, result.stderr
    line = algorithms.get("image-classification").input_format(parse_job(request))
    assert f"train: images + channel 'train_lst' (ContentType '{content_type}' is an image type" in line, line


@pytest.mark.parametrize("content_type", RECORDIO_TYPES)
def test_recordio_channels_take_their_parameters(digits_request, sdk_channel, tmp_path, content_type):
    request = with_channels(digits_request, sdk_channel[content_type],
                            {"train": "s3://bucket/digits/train-rec/", "validation": "s3://bucket/digits/val-rec/"})
    result = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    assert result.returncode == 0, result.stderr
    line = algorithms.get("image-classification").input_format(parse_job(request))
    assert f"train: RecordIO (ContentType '{content_type}')" in line, line


def test_detection_channels_take_image_types_and_ignore_the_annotations_type(tmp_path):
    from raysight.sample_data import shapes

    root = str(tmp_path / "shapes")
    counts = shapes.write(root, train=4, validation=2, size=64, formats=("json",))
    request = shapes.training_request(root, str(tmp_path / "out"), "json", counts=counts)
    for channel in request["InputDataConfig"]:
        channel["ContentType"] = "application/json" if channel["ChannelName"].endswith("_annotation") \
            else "application/x-jpeg"
    result = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    assert result.returncode == 0, result.stderr
    line = algorithms.get("object-detection").input_format(parse_job(request))
    assert "train: images + channel 'train_annotation' (ContentType 'application/x-jpeg'" in line, line


@pytest.mark.parametrize("content_type", ["text/csv", "application/x-sagemaker-model", "application/zip"])
def test_a_type_that_names_no_format_gets_one_line_naming_channel_value_and_accepted(digits_request, tmp_path,
                                                                                     content_type):
    request = json.loads(json.dumps(digits_request))
    request["InputDataConfig"][1]["ContentType"] = content_type  # the validation channel
    result = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0] == (f"ClientError: channel 'validation' content type '{content_type}' names no input format "
                        "raysight reads; accepted: image/*, application/x-image, application/jpeg, "
                        "application/x-jpeg (images + index files) or application/x-recordio (RecordIO)")


@pytest.mark.parametrize("content_type,ok", [("application/x-image", True), ("application/jpeg", True),
                                             ("application/x-jpeg", True), ("image/png", True),
                                             ("image/webp", True), ("text/csv", False)])
def test_transform_jobs_take_the_same_image_types(tmp_path, content_type, ok):
    from raysight.errors import ClientError
    from raysight.serve.codecs import EXECUTION_PARAMETERS

    request = transform_request("t", str(tmp_path), str(tmp_path / "out"),
                                TransformInput={"ContentType": content_type})
    if ok:
        assert parse_transform(request, "m.tar.gz", EXECUTION_PARAMETERS).content_type == content_type
    else:
        with pytest.raises(ClientError, match=f"ContentType '{content_type}' names no image type"):
            parse_transform(request, "m.tar.gz", EXECUTION_PARAMETERS)
