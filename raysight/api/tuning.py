"""CreateHyperParameterTuningJob, Describe-, Stop-, ListHyperParameterTuningJobs and
ListTrainingJobsForHyperParameterTuningJob over Ray Jobs running `raysight tune`.

The record is the tuning job's own tuning-job.json and training-jobs.json (kept current by
`raysight tune` as each training job ends); its children are ordinary training jobs with
job.json files, which `Training` describes and lists beside the API's own.
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Any

from raysight import storage
from raysight.api import places
from raysight.api.training import paginate
from raysight.api.training import read_json as _read
from raysight.api.ray_jobs import TERMINAL
from raysight.api.wire import AwsError, validation
from raysight.errors import ClientError
from raysight.job_request import arn

KIND = "tuning"
ENDED = ("Completed", "Failed", "Stopped")


def output(request: dict[str, Any], *parts: str) -> str:
    return storage.join(request["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"],
                        request["HyperParameterTuningJobName"], *parts)


class Tuning:
    def __init__(self, state, jobs, quota=None):
        from raysight.api.quota import Quota

        self.state, self.jobs = state, jobs
        self.quota = quota or Quota()

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        from raysight.tune.request import parse_tuning_job

        name = body["HyperParameterTuningJobName"]
        if not body.get("TrainingJobDefinition"):
            raise validation("raysight api needs TrainingJobDefinition (TrainingJobDefinitions is not supported)")
        if self.state.get(KIND, name):
            raise AwsError("ResourceInUse", f"Hyperparameter tuning job {name!r} already exists")
        places.check_definition(body["TrainingJobDefinition"], "TrainingJobDefinition.")
        try:
            parse_tuning_job(body)  # ranges, strategy, definition: SageMaker refuses these at once
        except ClientError as exc:
            raise validation(str(exc).removeprefix("ClientError: ")) from None
        previous = _read(output(body, "tuning-job.json"))
        if previous and previous.get("HyperParameterTuningJobStatus") in ("Completed", "Failed"):
            raise AwsError("ResourceInUse", f"tuning job {name!r} already ended under its S3OutputPath; "
                                            "choose a new HyperParameterTuningJobName")
        submission_id = f"raysight-tuning-{name}-{uuid.uuid4().hex[:8]}"
        with self.quota.admit("Number of concurrent hyperparameter tuning jobs", self.running):
            if not self.state.add(KIND, name, body, submission_id):
                raise AwsError("ResourceInUse", f"Hyperparameter tuning job {name!r} already exists")
        self.submit(name, body, submission_id)
        return {"HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", name)}

    def submit(self, name: str, body: dict[str, Any], submission_id: str) -> None:
        def failed(exc):
            record = self.record(self.state.get(KIND, name))
            now = time.time()
            self.state.finish(KIND, name, {**record, "HyperParameterTuningJobStatus": "Failed",
                                           "HyperParameterTuningEndTime": now, "LastModifiedTime": now,
                                           "FailureReason": f"the job could not be submitted to Ray: {exc}"[:1024]})

        self.jobs.submit_later(submission_id, ["tune", "request.json"], {"request.json": json.dumps(body)},
                               done=lambda: self.jobs.submitted(self.state, KIND, name, submission_id), failed=failed)

    def _row(self, name: str) -> dict[str, Any]:
        row = self.state.get(KIND, name)
        if row is None:
            raise AwsError("ResourceNotFound", f"Amazon SageMaker can't find a tuning job with name {name}")
        return row

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.record(self._row(body["HyperParameterTuningJobName"]))

    def running(self) -> int:
        return sum(self.record(row)["HyperParameterTuningJobStatus"] not in ENDED
                   for row in self.state.unfinished(KIND))

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        if row["final"]:
            return row["final"]
        request = row["request"]
        info, ray_status = self.jobs.status(row)
        record = _read(output(request, "tuning-job.json")) or {}
        if record.get("CreationTime", 0) < row["created"]:
            record = {}  # an earlier run's record under this name
        if not record:
            record = {"HyperParameterTuningJobName": row["name"],
                      "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", row["name"]),
                      "HyperParameterTuningJobConfig": request["HyperParameterTuningJobConfig"],
                      "TrainingJobDefinition": request.get("TrainingJobDefinition"),
                      "HyperParameterTuningJobStatus": "InProgress", "LastModifiedTime": row["created"],
                      "TrainingJobStatusCounters": {k: 0 for k in ("Completed", "InProgress", "RetryableError",
                                                                   "NonRetryableError", "Stopped")},
                      "ObjectiveStatusCounters": {"Succeeded": 0, "Pending": 0, "Failed": 0}}
        record = {**record, "CreationTime": row["created"]}
        status = record["HyperParameterTuningJobStatus"]
        if status not in ENDED and (ray_status in TERMINAL or (row["submitted"] and not info)):
            stopped = ray_status == "STOPPED"
            record.update(HyperParameterTuningJobStatus="Stopped" if stopped else "Failed",
                          HyperParameterTuningEndTime=time.time(), LastModifiedTime=time.time())
            if not stopped:
                record["FailureReason"] = "the tuning process ended without a result (" + str(
                    getattr(info, "message", None) or "the Ray cluster no longer knows this job")[:900] + ")"
        elif row["stop_requested"] and status == "InProgress":
            record["HyperParameterTuningJobStatus"] = "Stopping"
        if record["HyperParameterTuningJobStatus"] in ENDED and (ray_status in TERMINAL
                                                                 or not info):
            self.state.finish(KIND, row["name"], record)
        return record

    def stop(self, body: dict[str, Any]) -> dict[str, Any]:
        row = self._row(body["HyperParameterTuningJobName"])
        status = self.record(row)["HyperParameterTuningJobStatus"]
        if status in ENDED:
            raise validation(f"The request was rejected because the tuning job is in status {status}.")
        self.state.stop(KIND, row["name"])
        self.jobs.stop(row["submission_id"])  # SIGTERM: `raysight tune` stops every running job gracefully
        return {}

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        keys = ("HyperParameterTuningJobName", "HyperParameterTuningJobArn", "HyperParameterTuningJobStatus",
                "CreationTime", "HyperParameterTuningEndTime", "LastModifiedTime", "TrainingJobStatusCounters",
                "ObjectiveStatusCounters")
        summaries = []
        for row in self.state.all(KIND):
            record = self.record(row)
            summary = {k: record[k] for k in keys if k in record}
            summary["Strategy"] = record["HyperParameterTuningJobConfig"]["Strategy"]
            summary["ResourceLimits"] = record["HyperParameterTuningJobConfig"]["ResourceLimits"]
            summaries.append(summary)
        return paginate(summaries, body, "HyperParameterTuningJobSummaries", {
            "Name": "HyperParameterTuningJobName", "CreationTime": "CreationTime",
            "Status": "HyperParameterTuningJobStatus"},
            name_key="HyperParameterTuningJobName", status_key="HyperParameterTuningJobStatus")

    def children(self, body: dict[str, Any]) -> dict[str, Any]:
        """ListTrainingJobsForHyperParameterTuningJob."""
        row = self._row(body["HyperParameterTuningJobName"])
        self.record(row)
        listed = (_read(output(row["request"], "training-jobs.json")) or {}).get("TrainingJobSummaries", [])
        listed = [self.orphan(s, summary=True) for s in listed]
        for s in listed:
            s["_objective"] = (s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")
        sort_by = body.get("SortBy") or "Name"
        if sort_by == "FinalObjectiveMetricValue":
            listed = [s for s in listed if s["_objective"] is not None]  # as SageMaker: only scored jobs
        page = paginate(listed, {**body, "SortBy": sort_by}, "TrainingJobSummaries", {
            "Name": "TrainingJobName", "CreationTime": "CreationTime", "Status": "TrainingJobStatus",
            "FinalObjectiveMetricValue": "_objective"}, name_key="TrainingJobName", status_key="TrainingJobStatus")
        for s in page["TrainingJobSummaries"]:
            s.pop("_objective", None)
        return page

    def child_output(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """(where its job.json is, its tuning job's row), if `name` is a child of one of these tuning jobs."""
        for row in self.parents(name):
            uri = storage.join(row["request"]["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"],
                               name, "output", "job.json")
            if storage.exists(uri):
                return uri, row
        return None

    def parents(self, name: str) -> list[dict[str, Any]]:
        """The tuning jobs whose children's names `name` could be (<tuning job>-<nnn>-<id>)."""
        return [row for row in self.state.all(KIND) if name.startswith(row["name"] + "-")]

    def orphan(self, child: dict[str, Any], summary: bool = False) -> dict[str, Any]:
        """A child still `InProgress` after its tuning job ended: the tuning process was killed
        (SIGKILL, a lost node), and its trials with it, before it could end them. The child
        ends as its tuning job did, at that time. `summary`: a ListTrainingJobsForHyperParameter-
        TuningJob row, whose shape has no SecondaryStatus."""
        if child.get("TrainingJobStatus") not in ("InProgress", "Stopping"):
            return child
        rows = self.parents(child["TrainingJobName"])
        if not rows:
            return child
        parent = self.record(rows[0])
        ended = parent["HyperParameterTuningJobStatus"]
        if ended not in ENDED:
            return child
        end = parent.get("HyperParameterTuningEndTime") or time.time()
        verdict = "Stopped" if ended == "Stopped" else "Failed"
        reason = f"AlgorithmError: tuning job {rows[0]['name']} ended ({ended}) before this training job did"
        out = {**child, "TrainingJobStatus": verdict, "TrainingEndTime": end}
        if verdict == "Failed":
            out["FailureReason"] = reason
        if not summary:
            out.update(SecondaryStatus=verdict, LastModifiedTime=end)
            steps = [dict(t) for t in child.get("SecondaryStatusTransitions") or []]
            if steps:
                steps[-1].setdefault("EndTime", end)
            out["SecondaryStatusTransitions"] = steps + [
                {"Status": verdict, "StartTime": end, "EndTime": end, "StatusMessage": reason}]
        return out

    def child_names(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(name, job.json URI, its tuning job's row) of every child seen so far, running ones included."""
        out = []
        for row in self.state.all(KIND):
            folder = row["request"]["TrainingJobDefinition"]["OutputDataConfig"]["S3OutputPath"]
            for name in storage.list_dirs(folder):
                if name.startswith(row["name"] + "-") and name != row["name"]:
                    out.append((name, storage.join(folder, name, "output", "job.json"), row))
        return out
