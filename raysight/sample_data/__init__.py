"""The bundled sample data sets (real digits for image classification, procedural shapes
for object detection) and the CreateTrainingJob requests that train on them."""
from __future__ import annotations

from raysight.job_request import DEFAULT_INSTANCE_TYPE

IMAGE_URI = "811284229777.dkr.ecr.us-east-1.amazonaws.com/{}:1"  # SageMaker's us-east-1 built-in images


def channel(name: str, uri: str, content_type: str, **source) -> dict:
    return {"ChannelName": name, "ContentType": content_type,
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                            "S3DataDistributionType": "FullyReplicated", **source}}}


def training_request(name: str, algorithm: str, mode: str, hyperparameters: dict, channels: list[dict],
                     output: str) -> dict:
    """A CreateTrainingJob request as SageMaker's console or SDK would send it."""
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {"TrainingImage": IMAGE_URI.format(algorithm), "TrainingInputMode": mode},
        "RoleArn": "arn:aws:iam::000000000000:role/raysight",
        "HyperParameters": hyperparameters,
        "InputDataConfig": channels,
        "OutputDataConfig": {"S3OutputPath": output},
        "ResourceConfig": {"InstanceType": DEFAULT_INSTANCE_TYPE, "InstanceCount": 1, "VolumeSizeInGB": 10},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
    }
