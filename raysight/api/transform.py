"""CreateTransformJob, DescribeTransformJob, StopTransformJob, ListTransformJobs over Ray Jobs.

A transform job is `raysight transform request.json --model <ModelDataUrl>` run as a Ray Job,
with the model that `ModelName` names through CreateModel. The describe record is the
transform-job.json the job writes under its S3OutputPath (the CLI's), with the API's creation
time, `Stopping` while a stop is pending, and Ray's verdict where the job wrote none.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from raysight import storage
from raysight.api.ray_jobs import TERMINAL
from raysight.api import places
from raysight.api.training import paginate, read_json, stop_job
from raysight.api.wire import AwsError, not_found, validation
from raysight.errors import ClientError
from raysight.job_request import arn

KIND = "transform"
ENDED = ("Completed", "Failed", "Stopped")


class Transforms:
    def __init__(self, state, jobs, models):
        self.state, self.jobs, self.models = state, jobs, models

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from raysight.serve.codecs import EXECUTION_PARAMETERS
        from raysight.transform.request import parse

        name = body["TransformJobName"]
        if self.state.get(KIND, name):
            raise AwsError("ResourceInUse", f"Transform job names must be unique within an AWS account and region, "
                                            f"and a transform job with this name already exists "
                                            f"({arn('transform-job', name)})")
        model = self.models.model(body["ModelName"])["PrimaryContainer"]["ModelDataUrl"]
        source = body["TransformInput"]["DataSource"]["S3DataSource"]
        places.check([("TransformInput.DataSource.S3DataSource.S3Uri", source["S3Uri"]),
                      ("TransformOutput.S3OutputPath", body["TransformOutput"]["S3OutputPath"])])
        if source.get("S3DataType") == "ManifestFile":
            places.check_manifest("TransformInput.DataSource.S3DataSource.S3Uri", source["S3Uri"])
        try:
            parse(body, model, EXECUTION_PARAMETERS)  # as `raysight transform` refuses it, before any work
        except ClientError as exc:
            raise validation(str(exc)) from None
        submission_id = f"raysight-transform-{name}-{uuid.uuid4().hex[:8]}"
        if not self.state.add(KIND, name, {**body, "raysight:model": model}, submission_id):
            raise AwsError("ResourceInUse", f"a transform job named {name!r} already exists")
        self.submit(name, self.state.get(KIND, name)["request"], submission_id)
        return {"TransformJobArn": arn("transform-job", name)}

    def submit(self, name: str, request: dict[str, Any], submission_id: str) -> None:
        body = {k: v for k, v in request.items() if k != "raysight:model"}
        self.jobs.submit_later(submission_id, ["transform", "request.json", "--model", request["raysight:model"]],
                               {"request.json": json.dumps(body)},
                               done=lambda: self.jobs.submitted(self.state, KIND, name, submission_id),
                               failed=lambda exc: self.state.finish(KIND, name, self._failed(
                                   name, body, f"InternalServerError: the job could not be submitted to Ray: {exc}")))

    @staticmethod
    def _failed(name: str, body: dict[str, Any], reason: str) -> dict[str, Any]:
        from raysight.transform.job import describe_base

        now = time.time()
        return {**describe_base(body, now), "TransformJobStatus": "Failed", "FailureReason": reason[:1024],
                "TransformEndTime": now}

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        row = self.state.get(KIND, body["TransformJobName"])
        if row is None:
            raise not_found("transform job", body["TransformJobName"])
        return self.record(row)

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["final"]:
            return row["final"]
        from raysight.transform.job import describe_base

        request = {k: v for k, v in row["request"].items() if k != "raysight:model"}
        info, ray_status = self.jobs.status(row)
        record = read_json(storage.join(request["TransformOutput"]["S3OutputPath"], "transform-job.json")) or {}
        if record.get("CreationTime", 0) < row["created"]:
            record = {}  # an earlier job's record under that output path
        if record.get("TransformJobStatus") not in ENDED:
            record = {**describe_base(request, row["created"]), **record}
            if ray_status in TERMINAL or (row["submitted"] and info is None):
                stopped = ray_status == "STOPPED"
                record.update(TransformJobStatus="Stopped" if stopped else "Failed", TransformEndTime=time.time())
                if not stopped:
                    record["FailureReason"] = ("AlgorithmError: the transform process ended without a result ("
                                               f"{str(getattr(info, 'message', '') or 'the Ray cluster no longer knows this job')[:900]})")
        record["CreationTime"] = row["created"]
        if row["stop_requested"] and record["TransformJobStatus"] == "InProgress":
            record["TransformJobStatus"] = "Stopping"
        if record["TransformJobStatus"] in ENDED and (ray_status in TERMINAL or not info):
            self.state.finish(KIND, row["name"], record)
        return record

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        # SIGTERM: the job answers what is in flight, then ends Stopped
        return stop_job(self, KIND, "transform job", body["TransformJobName"], "TransformJobStatus")

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        keys = ("TransformJobName", "TransformJobArn", "CreationTime", "TransformEndTime", "LastModifiedTime",
                "TransformJobStatus", "FailureReason")
        rows = [{k: r[k] for k in keys if r.get(k) is not None} for r in map(self.record, self.state.all(KIND))]
        return paginate(rows, body, "TransformJobSummaries", {"Name": "TransformJobName", "CreationTime": "CreationTime",
                                                              "Status": "TransformJobStatus"},
                        name_key="TransformJobName", status_key="TransformJobStatus")
