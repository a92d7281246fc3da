"""The two CloudWatch Logs calls the SageMaker SDK makes to stream a job's log
(`DescribeLogStreams`, `GetLogEvents`), answered from the Ray Job's log.

Log group `/aws/sagemaker/TrainingJobs` (`/aws/sagemaker/HyperParameterTuningJobs` for a
tuning job's own log, `/aws/sagemaker/TransformJobs` for a transform job's), one stream per
job, `<job-name>/algo-1-<creation time>`; a tuning job's children have streams of their own
in the training group too. Ray prefixes a
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

GROUPS = {"/aws/sagemaker/TrainingJobs": "training", "/aws/sagemaker/HyperParameterTuningJobs": "tuning",
          "/aws/sagemaker/TransformJobs": "transform"}
RAY_PREFIX = re.compile(r"^(?:\x1b\[[0-9;]*m)?\([\w.:-]+ pid=\d+(?:, ip=[\d.]+)?\)(?:\x1b\[0m)? ?")
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
PAGE = 10000


def _missing(what: str) -> AwsError:
    return AwsError("ResourceNotFoundException", f"The specified {what} does not exist.")


class Stream:
    """One log stream: a job's name, its creation time, and how to read its lines."""

    def __init__(self, name: str, created: float, read):
        self.name, self.created, self.read = f"{name}/algo-1-{int(created)}", created, read


class Logs:
    def __init__(self, state, jobs, tuning=None):
        self.state, self.jobs, self.tuning = state, jobs, tuning

    def _streams(self, group: str | None, prefix: str = "") -> list[Stream]:
        if group not in GROUPS:
            raise _missing("log group")
        streams = [Stream(r["name"], r["created"], lambda r=r: self._lines(r["submission_id"]))
                   for r in self.state.all(GROUPS[group]) if r["submission_id"]]
        if GROUPS[group] == "training" and self.tuning:
            streams += self._children(prefix)
        return [s for s in streams if s.name.startswith(prefix)]

    def _children(self, prefix: str) -> list[Stream]:
        """A tuning job's children run in its Ray Job and share its log; each line a child
        logs starts with its tag (tune.children.child_tag), so its own stream is those lines,
        untagged, as SageMaker gives every training job of a tuning job a stream of its own."""
        from raysight.api.training import read_json
        from raysight.tune.children import child_tag

        out, shared = [], {}  # one read of a tuning job's log serves all its children in this call

        def lines_of(submission_id: str) -> list[str]:
            if submission_id not in shared:
                shared[submission_id] = self._lines(submission_id)
            return shared[submission_id]

        for name, uri, parent in self.tuning.child_names():
            if not (f"{name}/".startswith(prefix) or prefix.startswith(f"{name}/")):
                continue  # the SDK asks for one job's streams: read no other job's record
            record = read_json(uri) if parent["submission_id"] else None
            if not record:
                continue
            tag = child_tag(name)
            out.append(Stream(name, record["CreationTime"], lambda p=parent, tag=tag: [
                line[len(tag):] for line in lines_of(p["submission_id"]) if line.startswith(tag)]))
        return out

    def _lines(self, submission_id: str) -> list[str]:
        text = self.jobs.logs(submission_id)
        return [COLOUR.sub("", RAY_PREFIX.sub("", line)) for line in text.splitlines()]

    def describe_streams(self, body: dict[str, Any]) -> dict[str, Any]:
        streams = []
        for stream in self._streams(body.get("logGroupName"), body.get("logStreamNamePrefix") or ""):
            created = int(stream.created * 1000)
            lines = stream.read()
            streams.append({"logStreamName": stream.name, "creationTime": created, "firstEventTimestamp": created,
                            "lastEventTimestamp": created + max(len(lines) - 1, 0),
                            "lastIngestionTime": int(time.time() * 1000),
                            "arn": f"arn:aws:logs:local:000000000000:log-group:{body['logGroupName']}:"
                                   f"log-stream:{stream.name}", "storedBytes": 0})
        key = "lastEventTimestamp" if body.get("orderBy") == "LastEventTime" else "logStreamName"
        streams.sort(key=lambda s: s[key], reverse=bool(body.get("descending")))
        start = int(body.get("nextToken") or 0)
        size = int(body.get("limit") or 50)
        out = {"logStreams": streams[start:start + size]}
        if start + size < len(streams):
            out["nextToken"] = str(start + size)
        return out

    def events(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["logStreamName"]
        stream = next((s for s in self._streams(body.get("logGroupName"), name) if s.name == name), None)
        if stream is None:
            raise _missing("log stream")
        base = int(stream.created * 1000)
        lines = stream.read()
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
