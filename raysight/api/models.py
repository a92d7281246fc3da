"""CreateModel, DescribeModel, DeleteModel, ListModels and the same four for endpoint configs.

Both are records and nothing runs: a model names a built-in algorithm's image and a
`model.tar.gz`; an endpoint config names models by variant. The checks and messages are
SageMaker's, since the SDK matches on them ("Could not find model", "Cannot create already
existing model" means reuse it).
"""
from __future__ import annotations

import time
from typing import Any

from raysight import algorithms
from raysight.api import places
from raysight.api.training import paginate
from raysight.api.wire import validation
from raysight.job_request import algorithm_name, arn

MODEL, CONFIG = "model", "endpoint-config"


def missing(kind: str, name: str) -> Exception:
    return validation(f'Could not find {kind} "{arn(_resource(kind), name)}".')


def existing(kind: str, name: str) -> Exception:
    return validation(f'Cannot create already existing {kind} "{arn(_resource(kind), name)}".')


def _resource(kind: str) -> str:
    return {"model": "model", "endpoint configuration": "endpoint-config", "endpoint": "endpoint"}[kind]


def model_algorithm(container: dict[str, Any]) -> str:
    """The built-in algorithm a container's `Image` names (the training images' URIs)."""
    return algorithm_name({"TrainingImage": container.get("Image") or ""})


class Models:
    def __init__(self, state):
        self.state = state

    # -- models ------------------------------------------------------------------------------
    def create_model(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["ModelName"]
        containers = body.get("Containers") or []
        if body.get("PrimaryContainer") and containers:
            raise validation("Specify PrimaryContainer or Containers, not both")
        if len(containers) > 1:
            raise validation("raysight hosts one container per model: an inference pipeline (several "
                             "Containers) is not supported")
        container = body.get("PrimaryContainer") or (containers[0] if containers else None)
        if not container:
            raise validation("CreateModel needs a PrimaryContainer (Image and ModelDataUrl)")
        algorithm = model_algorithm(container)
        if algorithm not in algorithms.names():
            raise validation(f"PrimaryContainer.Image {container.get('Image')!r} names no built-in algorithm "
                             f"raysight hosts ({', '.join(algorithms.names())}), e.g. "
                             "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1")
        if not container.get("ModelDataUrl"):
            raise validation("PrimaryContainer.ModelDataUrl is required: the model.tar.gz a training job wrote")
        places.check([("PrimaryContainer.ModelDataUrl", container["ModelDataUrl"])])
        record = {"ModelName": name, "ModelArn": arn("model", name), "PrimaryContainer": container,
                  "CreationTime": time.time(), "EnableNetworkIsolation": bool(body.get("EnableNetworkIsolation"))}
        if body.get("ExecutionRoleArn"):
            record["ExecutionRoleArn"] = body["ExecutionRoleArn"]
        if not self.state.add_resource(MODEL, name, record):
            raise existing("model", name)
        return {"ModelArn": record["ModelArn"]}

    def model(self, name: str) -> dict[str, Any]:
        record = self.state.resource(MODEL, name)
        if record is None:
            raise missing("model", name)
        return record

    def describe_model(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.model(body["ModelName"])

    def delete_model(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.state.remove_resource(MODEL, body["ModelName"]):
            raise missing("model", body["ModelName"])
        return {}

    def list_models(self, body: dict[str, Any]) -> dict[str, Any]:
        rows = [{k: r[k] for k in ("ModelName", "ModelArn", "CreationTime")} for r in self.state.resources(MODEL)]
        return paginate(rows, body, "Models", {"Name": "ModelName", "CreationTime": "CreationTime"},
                        name_key="ModelName", status_key="ModelName")

    # -- endpoint configs --------------------------------------------------------------------
    def create_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointConfigName"]
        variants = body["ProductionVariants"]
        names = [v["VariantName"] for v in variants]
        if len(set(names)) != len(names):
            raise validation(f"VariantName values must be unique within an endpoint config, got {names}")
        for v in variants:
            self.model(v["ModelName"])  # ValidationException "Could not find model ..."
            if v.get("ServerlessConfig") or not v.get("InitialInstanceCount"):
                raise validation(f"ProductionVariant {v['VariantName']}: give InitialInstanceCount and "
                                 "InstanceType (serverless variants are not supported)")
        if body.get("AsyncInferenceConfig"):
            raise validation("AsyncInferenceConfig is not supported: raysight endpoints answer InvokeEndpoint")
        record = {"EndpointConfigName": name, "EndpointConfigArn": arn("endpoint-config", name),
                  "ProductionVariants": variants, "CreationTime": time.time()}
        if body.get("DataCaptureConfig"):
            record["DataCaptureConfig"] = body["DataCaptureConfig"]
        if not self.state.add_resource(CONFIG, name, record):
            raise existing("endpoint configuration", name)
        return {"EndpointConfigArn": record["EndpointConfigArn"]}

    def config(self, name: str) -> dict[str, Any]:
        record = self.state.resource(CONFIG, name)
        if record is None:
            raise missing("endpoint configuration", name)
        return record

    def describe_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.config(body["EndpointConfigName"])

    def delete_endpoint_config(self, body: dict[str, Any]) -> dict[str, Any]:
        if not self.state.remove_resource(CONFIG, body["EndpointConfigName"]):
            raise missing("endpoint configuration", body["EndpointConfigName"])
        return {}

    def list_endpoint_configs(self, body: dict[str, Any]) -> dict[str, Any]:
        rows = [{k: r[k] for k in ("EndpointConfigName", "EndpointConfigArn", "CreationTime")}
                for r in self.state.resources(CONFIG)]
        return paginate(rows, body, "EndpointConfigs", {"Name": "EndpointConfigName", "CreationTime": "CreationTime"},
                        name_key="EndpointConfigName", status_key="EndpointConfigName")
