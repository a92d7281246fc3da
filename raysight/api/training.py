"""CreateTrainingJob, DescribeTrainingJob, StopTrainingJob, ListTrainingJobs over Ray Jobs.

A job is `raysight train` run as a Ray Job, so its status, artifacts, SIGTERM handling and
job.json are the CLI's. The describe record is that job.json (the driver keeps it current,
transitions included), with the API's creation time, `Stopping` while a stop is pending, and
Ray's verdict where the driver could not write one (killed, or never started).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from raysight import storage
from raysight.api import places
from raysight.api.ray_jobs import TERMINAL
from raysight.api.wire import AwsError, not_found, validation
from raysight.errors import ClientError
from raysight.job_request import arn

KIND = "training"
ENDED = ("Completed", "Failed", "Stopped")


def _job_json(request: dict[str, Any]) -> dict[str, Any] | None:
    return read_json(storage.join(request["OutputDataConfig"]["S3OutputPath"], request["TrainingJobName"],
                                   "output", "job.json"))


def read_json(uri: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None
    except Exception:  # noqa: BLE001 - unreadable while being replaced: the next poll reads it
        return None


def stop_job(owner, kind: str, label: str, name: str, status_key: str) -> dict[str, Any]:
    """Stop*Job: SIGTERM to the job's Ray Job (it keeps what it has done and ends Stopped);
    refused once the job has ended. `owner` is Training or Transforms (state, jobs, record)."""
    row = owner.state.get(kind, name)
    if row is None:
        raise not_found(label, name)
    status = owner.record(row)[status_key]
    if status in ENDED:
        raise validation(f"The request was rejected because the {label} is in status {status}.")
    owner.state.stop(kind, name)
    owner.jobs.stop(row["submission_id"])
    return {}


# Members DescribeTrainingJob always carries on SageMaker, which the SDK's readers index directly
# (`Estimator.attach`: OutputDataConfig.KmsKeyId, ResourceConfig.VolumeSizeInGB, RoleArn, ...).
DEFINITION_KEYS = ("RoleArn", "AlgorithmSpecification", "ResourceConfig", "StoppingCondition", "OutputDataConfig",
                   "InputDataConfig", "CheckpointConfig", "VpcConfig")


def as_sagemaker_describes(record: dict[str, Any], definition: dict[str, Any],
                           tuning_arn: str | None = None) -> dict[str, Any]:
    """`record` with what SageMaker always returns: the definition's members where the record
    lacks them (a tuning job's training jobs are described from their job.json, and take
    RoleArn and the rest from the tuning job's TrainingJobDefinition), SageMaker's defaults,
    and, for a tuning job's training job, its TuningJobArn."""
    out = dict(record)
    for key in DEFINITION_KEYS:
        if out.get(key) is None and definition.get(key) is not None:
            out[key] = definition[key]
    out["OutputDataConfig"] = {"KmsKeyId": "", **(out.get("OutputDataConfig") or {})}
    out["ResourceConfig"] = {"InstanceCount": 1, "VolumeSizeInGB": 30, **(out.get("ResourceConfig") or {})}
    for key in ("EnableNetworkIsolation", "EnableInterContainerTrafficEncryption", "EnableManagedSpotTraining"):
        out.setdefault(key, bool(definition.get(key, False)))
    if tuning_arn:
        out["TuningJobArn"] = tuning_arn
    return out


def failed_record(name: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
    now = time.time()
    return {"TrainingJobName": name, "TrainingJobArn": arn("training-job", name),
            "TrainingJobStatus": "Failed", "SecondaryStatus": "Failed", "FailureReason": reason[:1024],
            "ModelArtifacts": {"S3ModelArtifacts": ""}, "CreationTime": now, "LastModifiedTime": now,
            "TrainingEndTime": now, "SecondaryStatusTransitions": [
                {"Status": "Failed", "StartTime": now, "EndTime": now, "StatusMessage": reason[:1024]}],
            **{k: body[k] for k in ("AlgorithmSpecification", "HyperParameters", "InputDataConfig",
                                    "OutputDataConfig", "ResourceConfig", "StoppingCondition", "RoleArn")
               if k in body}}


class Training:
    def __init__(self, state, jobs, tuning=None, quota=None):
        from raysight.api.quota import Quota

        self.state, self.jobs = state, jobs
        self.quota = quota or Quota()
        self.tuning = tuning  # its children are training jobs too, recorded by their job.json

    # -- CreateTrainingJob ------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from raysight.train import driver

        name = body["TrainingJobName"]
        if self.state.get(KIND, name):
            raise AwsError("ResourceInUse", f"Training job names must be unique within an AWS account and "
                                            f"region, and a training job with this name already exists ({arn('training-job', name)})")
        places.check_definition(body)
        try:
            driver.prepare(body)  # as `raysight train --validate-only`: no data, no Ray
        except ClientError as exc:
            return self._refused(name, body, exc)
        existing = _job_json(body)
        if existing and existing.get("TrainingJobStatus") == "Completed":
            raise AwsError("ResourceInUse", f"training job {name!r} already completed under its "
                                            f"S3OutputPath; choose a new TrainingJobName")
        submission_id = f"raysight-training-{name}-{uuid.uuid4().hex[:8]}"
        with self.quota.admit("Number of concurrent training jobs", self.running):
            if not self.state.add(KIND, name, body, submission_id):
                raise AwsError("ResourceInUse", f"a training job named {name!r} already exists")
        self.submit(name, body, submission_id)
        return {"TrainingJobArn": arn("training-job", name)}

    def _refused(self, name, body, exc: ClientError) -> dict[str, Any]:
        """A request SageMaker accepts and then fails (bad hyperparameters of a built-in):
        a Failed job with its ClientError, and no Ray Job."""
        if not self.state.add(KIND, name, body, None, final=failed_record(name, body, str(exc))):
            raise AwsError("ResourceInUse", f"a training job named {name!r} already exists")
        return {"TrainingJobArn": arn("training-job", name)}

    def submit(self, name: str, body: dict[str, Any], submission_id: str) -> None:
        """In the background, so CreateTrainingJob answers at once, as SageMaker's does; a row
        whose submission never happened (a crash) is submitted on the next start."""
        self.jobs.submit_later(submission_id, ["train", "request.json"], {"request.json": json.dumps(body)},
                               done=lambda: self.jobs.submitted(self.state, KIND, name, submission_id),
                               failed=lambda exc: self.state.finish(KIND, name, failed_record(
                                   name, body, f"InternalServerError: the job could not be submitted to Ray: {exc}")))

    # -- DescribeTrainingJob ----------------------------------------------------------------
    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["TrainingJobName"]
        row = self.state.get(KIND, name)
        if row is not None:
            return as_sagemaker_describes(self.record(row), row["request"])
        found = self.tuning.child_output(name) if self.tuning else None
        record = read_json(found[0]) if found else None
        if not record:
            raise not_found("training job", name)
        parent = found[1]
        return as_sagemaker_describes(self.tuning.orphan(record), parent["request"]["TrainingJobDefinition"],
                                      arn("hyper-parameter-tuning-job", parent["name"]))

    def running(self) -> int:
        return sum(self.record(row)["TrainingJobStatus"] not in ENDED for row in self.state.unfinished(KIND))

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["final"]:
            return row["final"]
        request = row["request"]
        info, ray_status = self.jobs.status(row)
        record = _job_json(request) or {}
        if record.get("CreationTime", 0) < row["created"]:
            record = {}  # an earlier run's record under this name (e.g. from the CLI)
        if record.get("TrainingJobStatus") not in ENDED:
            record = self._from_ray(row, record, info, ray_status)
        record = {**record, "CreationTime": row["created"], "RoleArn": request.get("RoleArn")}
        record["SecondaryStatusTransitions"] = self._transitions(row, record)
        if row["stop_requested"] and record["TrainingJobStatus"] == "InProgress":
            record.update(TrainingJobStatus="Stopping", SecondaryStatus="Stopping")
        if record["TrainingJobStatus"] in ENDED and (ray_status in TERMINAL or not info):
            self.state.finish(KIND, row["name"], record)  # kept even when the Ray cluster is gone
        return {k: v for k, v in record.items() if v is not None}

    def _from_ray(self, row, record, info, ray_status) -> dict[str, Any]:
        """The record while the driver has not written one, or after it died without one."""
        request, now = row["request"], time.time()
        base = {"TrainingJobName": row["name"], "TrainingJobArn": arn("training-job", row["name"]),
                "TrainingJobStatus": "InProgress", "SecondaryStatus": "Starting",
                "ModelArtifacts": {"S3ModelArtifacts": ""}, "LastModifiedTime": row["created"],
                **{k: request[k] for k in ("AlgorithmSpecification", "HyperParameters", "InputDataConfig",
                                           "OutputDataConfig", "ResourceConfig", "StoppingCondition")
                   if k in request}}
        record = {**base, **record}
        if ray_status in TERMINAL or (row["submitted"] and info is None):
            stopped = ray_status == "STOPPED" and not record.get("TrainingStartTime")
            reason = "" if stopped else (getattr(info, "message", None)
                                         or "the Ray cluster no longer knows this job")
            record.update(TrainingJobStatus="Stopped" if stopped else "Failed",
                          SecondaryStatus="Stopped" if stopped else "Failed",
                          TrainingEndTime=record.get("TrainingEndTime") or now, LastModifiedTime=now)
            if not stopped:
                record["FailureReason"] = f"AlgorithmError: the training process ended without a result " \
                                          f"({str(reason)[:900]})"
        return record

    @staticmethod
    def _transitions(row, record) -> list[dict[str, Any]]:
        """The driver's transitions, from the API's creation time; a stop asked for shows."""
        steps = [dict(t) for t in record.get("SecondaryStatusTransitions") or []]
        if steps and steps[0]["Status"] == "Starting":
            steps[0]["StartTime"] = row["created"]
        else:
            steps.insert(0, {"Status": "Starting", "StartTime": row["created"],
                             "StatusMessage": "Starting the training job"}
                         | ({"EndTime": steps[0]["StartTime"]} if steps else {}))
        if record["TrainingJobStatus"] in ENDED and steps[-1]["Status"] not in (
                "Completed", "Failed", "Stopped", "MaxRuntimeExceeded"):
            end = record.get("TrainingEndTime") or record["LastModifiedTime"]
            steps[-1].setdefault("EndTime", end)
            steps.append({"Status": record["SecondaryStatus"], "StartTime": end, "EndTime": end,
                          "StatusMessage": record.get("FailureReason", "Training job stopped")[:1024]})
        if row["stop_requested"] and record["TrainingJobStatus"] == "InProgress":
            steps[-1].setdefault("EndTime", row["stop_requested"])
            steps.append({"Status": "Stopping", "StartTime": row["stop_requested"],
                          "StatusMessage": "Stopping the training job"})
        return steps

    # -- StopTrainingJob ----------------------------------------------------------------------
    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        return stop_job(self, KIND, "training job", body["TrainingJobName"], "TrainingJobStatus")

    # -- ListTrainingJobs -------------------------------------------------------------------
    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        summaries = [self._summary(self.record(row)) for row in self.state.all(KIND)]
        for _, uri, _ in self.tuning.child_names() if self.tuning else []:
            record = read_json(uri)
            if record:
                summaries.append(self._summary(self.tuning.orphan(record)))
        return paginate(summaries, body, "TrainingJobSummaries", {
            "Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus"},
            name_key="TrainingJobName", status_key="TrainingJobStatus")

    @staticmethod
    def _summary(record: dict[str, Any]) -> dict[str, Any]:
        keys = ("TrainingJobName", "TrainingJobArn", "CreationTime", "TrainingEndTime", "LastModifiedTime",
                "TrainingJobStatus", "SecondaryStatus")
        return {k: record[k] for k in keys if record.get(k) is not None}


def paginate(items: list[dict], body: dict[str, Any], result_key: str, sort_keys: dict[str, str],
             name_key: str, status_key: str) -> dict[str, Any]:
    """SageMaker's List* filters, sort and NextToken/MaxResults pages."""
    if body.get("NameContains"):
        items = [i for i in items if body["NameContains"] in i[name_key]]
    if body.get("StatusEquals"):
        items = [i for i in items if i[status_key] == body["StatusEquals"]]
    for field, key, after in (("CreationTimeAfter", "CreationTime", True),
                              ("CreationTimeBefore", "CreationTime", False),
                              ("LastModifiedTimeAfter", "LastModifiedTime", True),
                              ("LastModifiedTimeBefore", "LastModifiedTime", False)):
        if body.get(field) is not None:
            bound = float(body[field])
            items = [i for i in items if i.get(key) is not None and (i[key] > bound if after else i[key] < bound)]
    sort_key = sort_keys[body.get("SortBy") or "CreationTime"]
    items = sorted(items, key=lambda i: (i.get(sort_key) is None, i.get(sort_key) or 0, i[name_key]),
                   reverse=body.get("SortOrder") == "Descending")
    try:
        start = int(body.get("NextToken") or 0)
    except ValueError:
        raise validation(f"Invalid pagination token {body.get('NextToken')!r}") from None
    size = int(body.get("MaxResults") or 10)
    page = {result_key: items[start:start + size]}
    if start + size < len(items):
        page["NextToken"] = str(start + size)
    return page
