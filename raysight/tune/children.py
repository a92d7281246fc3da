"""A tuning job's children: each trial is a CreateTrainingJob request of its own."""
from __future__ import annotations

import hashlib
from typing import Any

from raysight.job_request import DEFAULT_INSTANCE_TYPE, DEFAULT_MAX_RUNTIME


def child_name(tuning_name: str, index: int, trial_id: str) -> str:
    """`<tuning-job>-<NNN>-<8 hex>` as SageMaker names them. The hex comes from the trial's id,
    not a random draw, so a resumed trial runs again under the same name (and its training
    job resumes from its checkpoint)."""
    digest = hashlib.sha1(f"{tuning_name}/{trial_id}".encode()).hexdigest()[:8]
    return f"{tuning_name}-{index:03d}-{digest}"


def child_tag(name: str) -> str:
    """What starts each line a child logs: parallel children's lines interleave in the
    tuning job's log, and this says whose each is (the API's per-child log streams split
    on it)."""
    return f"[{name}] "


def child_request(tuning: dict[str, Any], params: dict[str, Any], index: int, trial_id: str = "") -> dict[str, Any]:
    d = tuning["definition"]
    hyperparameters = {**tuning["static"], **{k: to_string(v) for k, v in params.items()}}
    if tuning.get("hyperband"):  # a job never trains past MaxResource epochs
        top = tuning["hyperband"]["max"]
        if int(float(hyperparameters.get("epochs", top))) > top or "epochs" not in hyperparameters:
            hyperparameters["epochs"] = str(top)
    hyperparameters["_tuning_objective_metric"] = tuning["metric"]
    return {
        "TrainingJobName": child_name(tuning["name"], index, trial_id),
        "AlgorithmSpecification": d.get("AlgorithmSpecification"),
        "RoleArn": d.get("RoleArn", ""),
        "HyperParameters": hyperparameters,
        "InputDataConfig": d.get("InputDataConfig", []),
        "OutputDataConfig": d.get("OutputDataConfig", {}),
        "ResourceConfig": d.get("ResourceConfig", {"InstanceType": DEFAULT_INSTANCE_TYPE, "InstanceCount": 1}),
        "StoppingCondition": d.get("StoppingCondition", {"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME}),
        "CheckpointConfig": d.get("CheckpointConfig"),
    }


def to_string(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)
