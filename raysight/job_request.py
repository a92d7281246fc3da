"""SageMaker `CreateTrainingJob` requests: parse, validate, normalise.

Everything that can be checked without touching data is checked here, before
any cluster time is spent; every problem is reported at once.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Collection

from raysight.errors import ClientError

JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
CHANNEL_NAME = re.compile(r"^[A-Za-z0-9.\-_]{1,64}$")
INPUT_MODES = ("File", "Pipe", "FastFile")
S3_DATA_TYPES = ("S3Prefix", "ManifestFile", "AugmentedManifestFile")
DISTRIBUTIONS = ("FullyReplicated", "ShardedByS3Key")
DEFAULT_MAX_RUNTIME = 86400
DEFAULT_INSTANCE_TYPE = "ml.m5.xlarge"
REGION, ACCOUNT = "local", "000000000000"


def arn(resource: str, name: str) -> str:
    """SageMaker's ARN form, e.g. arn:aws:sagemaker:local:000000000000:training-job/name."""
    return f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:{resource}/{name.lower()}"


@dataclass
class Channel:
    name: str
    uri: str
    content_type: str = ""
    input_mode: str = "File"
    s3_data_type: str = "S3Prefix"
    distribution: str = "FullyReplicated"
    compression: str = "None"
    record_wrapper: str = "None"
    shuffle_seed: int | None = None
    attribute_names: list[str] = field(default_factory=list)

    @property
    def mime(self) -> str:
        """Content type without parameters, lower-cased."""
        return self.content_type.split(";")[0].strip().lower()


@dataclass
class TrainingJob:
    name: str
    algorithm: str
    hyperparameters: dict[str, str]
    channels: dict[str, Channel]
    output_path: str
    instance_type: str
    instance_count: int
    max_runtime_s: int
    checkpoint_uri: str | None
    input_mode: str
    request: dict[str, Any]


def absolute(uri: str) -> str:
    """Local paths become absolute here, in the driver: Ray workers run elsewhere."""
    import os
    from urllib.parse import urlparse

    if urlparse(uri).scheme in ("s3", "https", "file"):
        return uri
    return os.path.abspath(os.path.expanduser(uri))


def locations(definition: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(field, holder, key) of every data location in a training job definition, present or not."""
    def part(holder: Any, key: str) -> dict[str, Any]:  # malformed parts are the parser's to name
        value = holder.get(key) if isinstance(holder, dict) else None
        return value if isinstance(value, dict) else {}

    places = [("OutputDataConfig.S3OutputPath", part(definition, "OutputDataConfig"), "S3OutputPath"),
              ("CheckpointConfig.S3Uri", part(definition, "CheckpointConfig"), "S3Uri")]
    channels = definition.get("InputDataConfig") if isinstance(definition, dict) else None
    for i, channel in enumerate(channels if isinstance(channels, list) else []):
        places.append((f"InputDataConfig.{i + 1}.DataSource.S3DataSource.S3Uri",
                       part(part(channel, "DataSource"), "S3DataSource"), "S3Uri"))
    return places


def with_absolute_locations(definition: dict[str, Any]) -> dict[str, Any]:
    """A copy whose local paths are absolute: read where the request was given, not in the
    working directory a Ray Tune trial runs in."""
    import copy

    out = copy.deepcopy(definition)
    for _, holder, key in locations(out):
        if isinstance(holder.get(key), str):
            holder[key] = absolute(holder[key])
    return out


def algorithm_name(spec: dict[str, Any]) -> str:
    """`image-classification` from an AlgorithmName or a SageMaker image URI such as
    `811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1`."""
    if spec.get("AlgorithmName"):
        return str(spec["AlgorithmName"]).rsplit("/", 1)[-1]
    image = str(spec.get("TrainingImage") or "")
    image = image.split("@", 1)[0]
    repository = image.rsplit("/", 1)[-1]
    return repository.split(":", 1)[0]


def load_request(path_or_uri: str) -> dict[str, Any]:
    """The request named on the command line. A local file is read as the caller's own: it is
    not one of the request's locations, which confine.py may limit."""
    import os

    from raysight import storage

    try:
        if "://" not in path_or_uri and os.path.isfile(path_or_uri):
            with open(path_or_uri, "rb") as f:
                return json.loads(f.read())
        return json.loads(storage.read_bytes(path_or_uri))
    except json.JSONDecodeError as exc:
        raise ClientError(f"{path_or_uri} is not valid JSON: {exc}") from None


def parse_training_job(request: dict[str, Any], algorithms: Collection[str]) -> TrainingJob:
    """Validate a CreateTrainingJob request; `algorithms` are the names that may be run."""
    problems: list[str] = []
    if not isinstance(request, dict):
        raise ClientError("the request must be a JSON object")

    name = request.get("TrainingJobName")
    if not isinstance(name, str) or not JOB_NAME.match(name):
        problems.append(
            f"TrainingJobName '{name}' must be 1-63 letters, digits and inner hyphens "
            "matching [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}"
        )

    spec = request.get("AlgorithmSpecification") or {}
    algo = ""
    if spec.get("TrainingImage") and spec.get("AlgorithmName"):
        problems.append("AlgorithmSpecification: give TrainingImage or AlgorithmName, not both")
    elif not (spec.get("TrainingImage") or spec.get("AlgorithmName")):
        problems.append("AlgorithmSpecification.TrainingImage (or AlgorithmName) is required")
    else:
        algo = algorithm_name(spec)
        if algo not in algorithms:
            problems.append(
                f"AlgorithmSpecification names algorithm '{algo}'; available: {', '.join(sorted(algorithms))}"
            )
    input_mode = spec.get("TrainingInputMode", "File")
    if input_mode not in INPUT_MODES:
        problems.append(f"AlgorithmSpecification.TrainingInputMode '{input_mode}' must be one of {', '.join(INPUT_MODES)}")

    hps = request.get("HyperParameters") or {}
    if not isinstance(hps, dict):
        problems.append("HyperParameters must be a map of string to string")
        hps = {}
    if len(hps) > 100:
        problems.append(f"HyperParameters has {len(hps)} entries; at most 100 are allowed")

    output = (request.get("OutputDataConfig") or {}).get("S3OutputPath")
    if not output:
        problems.append("OutputDataConfig.S3OutputPath is required")

    resources = request.get("ResourceConfig") or {}
    instance_count = resources.get("InstanceCount", 1)
    if not isinstance(instance_count, int) or instance_count < 1:
        problems.append(f"ResourceConfig.InstanceCount must be an integer >= 1, got {instance_count!r}")
        instance_count = 1

    stopping = request.get("StoppingCondition") or {}
    max_runtime = stopping.get("MaxRuntimeInSeconds", DEFAULT_MAX_RUNTIME)
    if not isinstance(max_runtime, int) or not 1 <= max_runtime <= 2_419_200:
        problems.append(f"StoppingCondition.MaxRuntimeInSeconds must be an integer in [1, 2419200], got {max_runtime!r}")
        max_runtime = DEFAULT_MAX_RUNTIME

    channels: dict[str, Channel] = {}
    raw_channels = request.get("InputDataConfig") or []
    if not isinstance(raw_channels, list) or not 1 <= len(raw_channels) <= 20:
        problems.append("InputDataConfig must be a list of 1 to 20 channels")
        raw_channels = []
    for i, raw in enumerate(raw_channels):
        channel, channel_problems = _parse_channel(raw, i, input_mode)
        problems.extend(channel_problems)
        if channel:
            if channel.name in channels:
                problems.append(f"InputDataConfig: channel '{channel.name}' appears twice")
            channels[channel.name] = channel

    if "train" in channels and "validation" in channels:
        a, b = (channels[c].uri.rstrip("/") + "/" for c in ("train", "validation"))
        if a.startswith(b) or b.startswith(a):
            problems.append(f"channels 'train' ({channels['train'].uri}) and 'validation' "
                            f"({channels['validation'].uri}) must live under different prefixes")
    checkpoint = (request.get("CheckpointConfig") or {}).get("S3Uri")
    if problems:
        raise ClientError(problems)
    return TrainingJob(
        name=name,
        algorithm=algo,
        hyperparameters={str(k): str(v) for k, v in hps.items()},
        channels=channels,
        output_path=absolute(output),
        instance_type=str(resources.get("InstanceType", DEFAULT_INSTANCE_TYPE)),
        instance_count=instance_count,
        max_runtime_s=max_runtime,
        checkpoint_uri=checkpoint,
        input_mode=input_mode,
        request=request,
    )


def _parse_channel(raw: Any, i: int, default_mode: str) -> tuple[Channel | None, list[str]]:
    where = f"InputDataConfig[{i}]"
    if not isinstance(raw, dict):
        return None, [f"{where} must be an object"]
    problems = []
    name = raw.get("ChannelName")
    if not isinstance(name, str) or not CHANNEL_NAME.match(name):
        problems.append(f"{where}.ChannelName '{name}' must match [A-Za-z0-9.-_]{{1,64}}")
    else:
        where = f"channel '{name}'"
    s3 = (raw.get("DataSource") or {}).get("S3DataSource") or {}
    uri = s3.get("S3Uri")
    if not uri:
        problems.append(f"{where}: DataSource.S3DataSource.S3Uri is required")
    mode = raw.get("InputMode") or default_mode
    data_type = s3.get("S3DataType", "S3Prefix")
    distribution = s3.get("S3DataDistributionType", "FullyReplicated")
    compression = raw.get("CompressionType", "None")
    wrapper = raw.get("RecordWrapperType", "None")
    for field_name, value, allowed in (
        ("InputMode", mode, INPUT_MODES),
        ("S3DataType", data_type, S3_DATA_TYPES),
        ("S3DataDistributionType", distribution, DISTRIBUTIONS),
        ("CompressionType", compression, ("None", "Gzip")),
        ("RecordWrapperType", wrapper, ("None", "RecordIO")),
    ):
        if value not in allowed:
            problems.append(f"{where}: {field_name} '{value}' must be one of {', '.join(allowed)}")
    if mode == "FastFile" and data_type != "S3Prefix":
        problems.append(f"{where}: InputMode FastFile needs S3DataType S3Prefix, got '{data_type}'")
    seed = (raw.get("ShuffleConfig") or {}).get("Seed")
    if seed is not None and not isinstance(seed, int):
        problems.append(f"{where}: ShuffleConfig.Seed must be an integer")
    if problems:
        return None, problems
    return (
        Channel(
            name=name,
            uri=absolute(uri),
            content_type=str(raw.get("ContentType") or ""),
            input_mode=mode,
            s3_data_type=data_type,
            distribution=distribution,
            compression=compression,
            record_wrapper=wrapper,
            shuffle_seed=seed,
            attribute_names=list(s3.get("AttributeNames") or []),
        ),
        [],
    )
