"""The two CloudWatch Logs calls the SageMaker SDK makes to stream a job's log
(`DescribeLogStreams`, `GetLogEvents`), answered from the Ray Job's log.

Log group `/aws/sagemaker/TrainingJobs` (and `/aws/sagemaker/HyperParameterTuningJobs` for a
tuning job's own log), one stream per job, `<job-name>/algo-1-<creation time>`. Ray prefixes a
worker's lines with `(RayTrainWorker pid=N)` and colours; those are taken off, so the metric
lines read exactly as SageMaker's and MetricDefinitions match them unchanged. Ray keeps no time
per line: event i of a job is stamped with the job's start time plus i milliseconds, so times
are stable and increasing, which is what the SDK's position tracking (timestamp, skip) needs.
"""
from __future__ import annotations

import re
import time
from typing import Any

from raysight.api.wire import AwsError

GROUPS = {"/aws/sagemaker/TrainingJobs": "training", "/aws/sagemaker/HyperParameterTuningJobs": "tuning"}
RAY_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)?\([\w.:-]+ pid=\d+(?:, ip=[\d.]+)?\)(?:\x1b\[0m)? ?")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
PAGE = 10000


def _missing(what: str) -> AwsError:
    return AwsError("ResourceNotFoundException", f"The specified {what} does not exist.")


class Logs:
    def __init__(self, state, jobs):
        self.state, self.jobs = state, jobs

    def _rows(self, group: str | None):
        if group not in GROUPS:
            raise _missing("log group")
        return [r for r in self.state.all(GROUPS[group]) if r["submission_id"]]

    @staticmethod
    def stream_name(row) -> str:
        return f"{row['name']}/algo-1-{int(row['created'])}"

    def _lines(self, row) -> list[str]:
        text = self.jobs.logs(row["submission_id"])
        return [COLOUR.sub("", RAY_PREFIX.sub("", line)) for line in text.splitlines()]

    def describe_streams(self, body: dict[str, Any]) -> dict[str, Any]:
        prefix = body.get("logStreamNamePrefix") or ""
        streams = []
        for row in self._rows(body.get("logGroupName")):
            name = self.stream_name(row)
            if not name.startswith(prefix):
                continue
            created = int(row["created"] * 1000)
            lines = self._lines(row)
            streams.append({"logStreamName": name, "creationTime": created, "firstEventTimestamp": created,
                            "lastEventTimestamp": created + max(len(lines) - 1, 0),
                            "lastIngestionTime": int(time.time() * 1000),
                            "arn": f"arn:aws:logs:local:000000000000:log-group:{body['logGroupName']}:"
                                   f"log-stream:{name}", "storedBytes": 0})
        key = "lastEventTimestamp" if body.get("orderBy") == "LastEventTime" else "logStreamName"
        streams.sort(key=lambda s: s[key], reverse=bool(body.get("descending")))
        start = int(body.get("nextToken") or 0)
        size = int(body.get("limit") or 50)
        out = {"logStreams": streams[start:start + size]}
        if start + size < len(streams):
            out["nextToken"] = str(start + size)
        return out

    def events(self, body: dict[str, Any]) -> dict[str, Any]:
        row = next((r for r in self._rows(body.get("logGroupName"))
                    if self.stream_name(r) == body["logStreamName"]), None)
        if row is None:
            raise _missing("log stream")
        base = int(row["created"] * 1000)
        lines = self._lines(row)
        first = max(0, int(body.get("startTime") or 0) - base)
        last = len(lines) if body.get("endTime") is None else min(len(lines), int(body["endTime"]) - base)
        token = body.get("nextToken")
        if token:
            try:
                direction, position = token.split("/", 1)
                position = int(position)
            except ValueError:
                raise AwsError("InvalidParameterException", f"The specified nextToken is invalid: {token}") from None
        else:
            direction, position = ("f", first) if body.get("startFromHead") else ("b", last)
        size = min(int(body.get("limit") or PAGE), PAGE)
        if direction == "f":
            begin, end = max(position, first), min(max(position, first) + size, last)
        else:
            end = min(position, last)
            begin = max(first, end - size)
        now = int(time.time() * 1000)
        events = [{"timestamp": base + i, "message": lines[i], "ingestionTime": now} for i in range(begin, end)]
        # at the end the forward token stays put, which is how a client knows it has read everything
        return {"events": events, "nextForwardToken": f"f/{end}", "nextBackwardToken": f"b/{begin}"}
