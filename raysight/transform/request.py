"""A `CreateTransformJob` request, checked against what raysight's built-in algorithms do (one
image per object) before any cluster time is spent. Field names and the set of fields come
from botocore's model of the sagemaker API."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

from raysight.errors import ClientError
from raysight.formats import IMAGE_CHANNEL_TYPES, is_image_type

NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
ACCEPTS = ("application/json", "application/jsonlines")


@dataclass
class TransformJob:
    name: str
    model: str  # model.tar.gz URI (ModelName resolves to it through CreateModel in `raysight api`)
    input_uri: str
    data_type: str  # S3Prefix | ManifestFile
    content_type: str
    compression: str  # None | Gzip
    output_uri: str
    accept: str
    assemble_with: str  # None | Line
    max_payload_mb: int
    batch_strategy: str  # MultiRecord | SingleRecord
    concurrency: int  # MaxConcurrentTransforms → Ray Data actor pool size
    instance_type: str
    instance_count: int
    request: dict[str, Any] = field(default_factory=dict)

    def channel(self):
        """What `data.channel_files` lists objects from (the training channels' listing)."""
        return SimpleNamespace(name="TransformInput", uri=self.input_uri, s3_data_type=self.data_type)


def request_members() -> set[str]:
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return set(model.operation_model("CreateTransformJob").input_shape.members)


def parse(request: Any, model_uri: str | None, defaults: dict[str, Any]) -> TransformJob:
    """Every problem at once, as one ClientError naming each field and what it may be.
    `defaults`: the container's /execution-parameters (MaxConcurrentTransforms, MaxPayloadInMB,
    BatchStrategy), used where the request leaves a field unset, as SageMaker does."""
    from raysight.job_request import absolute

    if not isinstance(request, dict):
        raise ClientError("a CreateTransformJob request must be a JSON object")
    problems = [f"unknown field '{k}' (CreateTransformJob has {', '.join(sorted(request_members()))})"
                for k in sorted(set(request) - request_members())]
    name = str(request.get("TransformJobName", ""))
    if not NAME.match(name):
        problems.append(f"TransformJobName '{name}' must match {NAME.pattern}")
    model = model_uri or ""
    if not model:
        problems.append(f"no model: pass --model MODEL_URI (the model.tar.gz ModelName '{request.get('ModelName', '')}'"
                        " stands for)")
    source = ((request.get("TransformInput") or {}).get("DataSource") or {}).get("S3DataSource") or {}
    tin, tout = request.get("TransformInput") or {}, request.get("TransformOutput") or {}
    data_type = source.get("S3DataType", "S3Prefix")
    if data_type not in ("S3Prefix", "ManifestFile"):
        problems.append(f"TransformInput.DataSource.S3DataSource.S3DataType '{data_type}' is not supported; "
                        "use S3Prefix or ManifestFile (one image per object)")
    if not source.get("S3Uri"):
        problems.append("TransformInput.DataSource.S3DataSource.S3Uri is required")
    content_type = str(tin.get("ContentType", "application/x-image"))
    if not is_image_type(content_type.split(";")[0].strip().lower()):
        problems.append(f"TransformInput.ContentType '{content_type}' names no image type; accepted: "
                        f"{', '.join(IMAGE_CHANNEL_TYPES)} (each object one JPEG or PNG image)")
    split = tin.get("SplitType", "None")
    if split != "None":
        problems.append(f"TransformInput.SplitType '{split}' is not supported: each object is one image (None)")
    compression = tin.get("CompressionType", "None")
    if compression not in ("None", "Gzip"):
        problems.append(f"TransformInput.CompressionType '{compression}' must be None or Gzip")
    if not tout.get("S3OutputPath"):
        problems.append("TransformOutput.S3OutputPath is required")
    accept = tout.get("Accept", ACCEPTS[0])
    if accept not in ACCEPTS:
        problems.append(f"TransformOutput.Accept '{accept}' must be one of {', '.join(ACCEPTS)}")
    assemble = tout.get("AssembleWith", "None")
    if assemble not in ("None", "Line"):
        problems.append(f"TransformOutput.AssembleWith '{assemble}' must be None or Line")
    payload = _int(request, "MaxPayloadInMB", defaults["MaxPayloadInMB"], problems)
    if payload is not None and not 1 <= payload <= 100:
        problems.append(f"MaxPayloadInMB {payload} must be in [1, 100] (0, chunked, is not supported by the "
                        "built-in algorithms)")
    concurrency = _int(request, "MaxConcurrentTransforms", 0, problems) or defaults["MaxConcurrentTransforms"]
    if concurrency is not None and concurrency < 1:
        problems.append(f"MaxConcurrentTransforms {concurrency} must be ≥ 0 (0: the container's default)")
    if payload and concurrency and payload * concurrency > 100:
        problems.append(f"MaxConcurrentTransforms × MaxPayloadInMB = {concurrency} × {payload} must be ≤ 100")
    strategy = request.get("BatchStrategy") or {"MULTI_RECORD": "MultiRecord", "SINGLE_RECORD": "SingleRecord"}.get(
        defaults.get("BatchStrategy"), "MultiRecord")
    if strategy not in ("MultiRecord", "SingleRecord"):
        problems.append(f"BatchStrategy '{strategy}' must be MultiRecord or SingleRecord")
    processing = request.get("DataProcessing") or {}
    if any(processing.get(k, d) != d for k, d in (("InputFilter", "$"), ("OutputFilter", "$"), ("JoinSource", "None"))):
        problems.append("DataProcessing (InputFilter, OutputFilter, JoinSource) applies to JSON and CSV records; "
                        "leave it unset for images")
    resources = request.get("TransformResources") or {}
    count = resources.get("InstanceCount", 1)
    if not isinstance(count, int) or count < 1:
        problems.append(f"TransformResources.InstanceCount {count!r} must be an integer ≥ 1")
    if problems:
        raise ClientError(problems)
    return TransformJob(
        name=name, model=absolute(model), input_uri=absolute(source["S3Uri"]), data_type=data_type,
        content_type=content_type, compression=compression, output_uri=absolute(tout["S3OutputPath"]),
        accept=accept, assemble_with=assemble, max_payload_mb=payload, batch_strategy=strategy,
        concurrency=concurrency, instance_type=resources.get("InstanceType", "ml.m5.large"), instance_count=count,
        request=request)


def _int(request: dict, key: str, default: int, problems: list[str]) -> int | None:
    value = request.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key} {value!r} must be an integer")
        return None
    return value
