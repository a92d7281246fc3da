"""What a tuning job leaves behind, in the shapes of SageMaker's API:
tuning-job.json (DescribeHyperParameterTuningJob), training-jobs.json
(ListTrainingJobsForHyperParameterTuningJob), tuning-results.png, and the table printed at the end."""
from __future__ import annotations

import json
import math
import time
from typing import Any

from raysight import plots, storage
from raysight.job_request import arn
from raysight.tune.children import to_string
from raysight.tune.rules import worse


def output_uri(tuning: dict[str, Any], *parts: str) -> str:
    return storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], tuning["name"], *parts)


def read_json(uri: str) -> dict | None:
    return json.loads(storage.read_bytes(uri)) if storage.exists(uri) else None


def summary(tuning: dict[str, Any], metrics: dict[str, Any], tuned: dict[str, Any], error=None) -> dict[str, Any]:
    """A HyperParameterTrainingJobSummary from a trial's last report (its training job's end)."""
    value = metrics.get(tuning["metric"])
    if not isinstance(value, (int, float)) or math.isnan(value):
        value = None
    name = metrics.get("job_name", "")
    out = {
        "TrainingJobName": name,
        "TrainingJobArn": arn("training-job", name),
        "TuningJobName": tuning["name"],
        "CreationTime": metrics.get("job_created") or time.time(),
        "TrainingJobStatus": metrics.get("job_status", "Failed" if error else "Stopped"),
        "TunedHyperParameters": {k: to_string(v) for k, v in tuned.items()},
        "ObjectiveStatus": "Succeeded" if value is not None else "Failed",
    }
    for key, field in (("job_started", "TrainingStartTime"), ("job_ended", "TrainingEndTime")):
        if metrics.get(key):
            out[field] = metrics[key]
    if value is not None:
        out["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "Type": tuning["objective"]["Type"], "MetricName": tuning["metric"], "Value": float(value)}
    reason = metrics.get("failure_reason") or (str(error)[:1024] if error else None)
    if reason:
        out["FailureReason"] = reason
    return out


def objective(s: dict[str, Any]) -> float | None:
    return (s.get("FinalHyperParameterTuningJobObjectiveMetric") or {}).get("Value")


def best_of(summaries: list[dict[str, Any]], mode: str) -> dict[str, Any] | None:
    best = None
    for s in summaries:
        value = objective(s)
        if value is not None and (best is None or worse(objective(best), value, mode)):
            best = s
    return best


def counters(summaries) -> dict[str, int]:
    counts = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    for s in summaries:
        status = s["TrainingJobStatus"]
        counts["NonRetryableError" if status == "Failed" else status if status in counts else "Stopped"] += 1
    return counts


def describe(tuning: dict[str, Any], summaries: list[dict], status: str, created: float, *, failure=None,
             completion=None, overall_best=None) -> dict[str, Any]:
    scored = [s for s in summaries if objective(s) is not None]
    now = time.time()
    request = tuning["request"]
    record = {
        "HyperParameterTuningJobName": tuning["name"],
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", tuning["name"]),
        "HyperParameterTuningJobConfig": request.get("HyperParameterTuningJobConfig"),
        "TrainingJobDefinition": tuning["definition"],  # as run: local paths made absolute
        "HyperParameterTuningJobStatus": status,
        "CreationTime": created,
        "LastModifiedTime": now,
        "TrainingJobStatusCounters": counters(summaries),
        "ObjectiveStatusCounters": {"Succeeded": len(scored), "Pending": 0, "Failed": len(summaries) - len(scored)},
    }
    if status != "InProgress":
        record["HyperParameterTuningEndTime"] = now
    best = best_of(summaries, tuning["mode"])
    if best:
        record["BestTrainingJob"] = best
    if request.get("WarmStartConfig"):
        record["WarmStartConfig"] = request["WarmStartConfig"]
        if overall_best:
            record["OverallBestTrainingJob"] = overall_best
    if failure:
        record["FailureReason"] = failure[:1024]
    if completion is not None:
        record["TuningJobCompletionDetails"] = completion
    return record


def write(tuning: dict[str, Any], record: dict[str, Any], summaries: list[dict]) -> None:
    storage.write_bytes(output_uri(tuning, "tuning-job.json"), json.dumps(record, indent=2).encode())
    ordered = sorted(summaries, key=lambda s: s["TrainingJobName"])
    storage.write_bytes(output_uri(tuning, "training-jobs.json"),
                        json.dumps({"TrainingJobSummaries": ordered}, indent=2).encode())


def curves(tuning: dict[str, Any], summaries: list[dict]) -> dict[str, list[float]]:
    """Each child's objective per epoch, from the metrics.json its training job wrote."""
    out = {}
    for s in summaries:
        rows = read_json(storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"],
                                      s["TrainingJobName"], "output", "metrics.json")) or []
        out[s["TrainingJobName"]] = [r.get(tuning["metric"]) for r in rows]
    return out


def picture(tuning: dict[str, Any], summaries: list[dict]) -> bytes:
    """Left: each trial's final objective in launch order, with the best-so-far line.
    Right: every trial's per-epoch curve; a stopped trial's curve ends in a cross where it stopped."""
    plt = plots.pyplot()
    ordered = sorted(summaries, key=lambda s: s["TrainingJobName"])
    per_epoch = curves(tuning, ordered)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4), dpi=100)
    colours = {"Completed": "tab:blue", "Stopped": "tab:orange", "Failed": "tab:red"}
    best, xs, line = None, [], []
    for i, s in enumerate(ordered, 1):
        value = objective(s)
        if value is None:
            left.scatter([i], [0], marker="x", color="tab:red")
            continue
        left.scatter([i], [value], color=colours.get(s["TrainingJobStatus"], "grey"))
        best = value if best is None or worse(best, value, tuning["mode"]) else best
        xs.append(i)
        line.append(best)
    left.step(xs, line, where="post", color="black", label="best so far")
    for status, colour in colours.items():
        left.scatter([], [], color=colour, label=status)
    left.set(xlabel="training job (launch order)", ylabel=tuning["metric"], title=tuning["name"])
    left.legend(fontsize=8)
    from matplotlib.ticker import MaxNLocator

    left.xaxis.set_major_locator(MaxNLocator(integer=True))  # job 1, 2, 3: not 1.25
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    for s in ordered:
        curve = [v for v in per_epoch.get(s["TrainingJobName"], []) if v is not None]
        if not curve:
            continue
        epochs = range(1, len(curve) + 1)
        stopped = s["TrainingJobStatus"] == "Stopped"
        right.plot(epochs, curve, alpha=0.8, linestyle="--" if stopped else "-")
        if stopped:
            right.scatter([len(curve)], [curve[-1]], marker="x", color="tab:orange", zorder=3)
    right.set(xlabel="epoch", ylabel=tuning["metric"], title="per-epoch objective (x: stopped early)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return plots.png(fig)


def format_table(summaries, metric: str, best) -> str:
    ordered = sorted(summaries, key=lambda s: s["TrainingJobName"])
    keys = sorted({k for s in ordered for k in s["TunedHyperParameters"]})
    header = ["TrainingJobName", "Status", *keys, metric]
    rows = []
    for s in ordered:
        value = objective(s)
        mark = " *" if best and s["TrainingJobName"] == best["TrainingJobName"] else ""
        rows.append([s["TrainingJobName"] + mark, s["TrainingJobStatus"],
                     *[s["TunedHyperParameters"].get(k, "") for k in keys],
                     "-" if value is None else f"{value:.6f}"])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows), "(* = best)"])
