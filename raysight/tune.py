"""A CreateHyperParameterTuningJob request → Ray Tune trials, each a real training job.

Each trial runs `raysight.train.driver.run` on a child CreateTrainingJob request
named `<tuning-job>-<NNN>-<8 hex>` as SageMaker names them; Ray Train reports
every epoch to Tune, so per-epoch objectives are visible to schedulers.
"""
from __future__ import annotations

import json
import math
import re
import uuid
from typing import Any

from raysight import algorithms, storage
from raysight.errors import ClientError
from raysight.hyperparams import Param
from raysight.job_request import DEFAULT_INSTANCE_TYPE, DEFAULT_MAX_RUNTIME, algorithm_name, arn

TUNING_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
STRATEGIES = ("Random", "Grid")  # Bayesian and Hyperband: not yet (see README)
# A range's kind → the Param.tunable value a hyperparameter needs to be tuned with it.
RANGE_KINDS = {"ContinuousParameterRanges": "Continuous", "IntegerParameterRanges": "Integer",
               "CategoricalParameterRanges": "Categorical"}


def parse_tuning_job(request: dict[str, Any]) -> dict[str, Any]:
    """Validate the request; return the pieces the run needs."""
    problems: list[str] = []
    name = request.get("HyperParameterTuningJobName")
    if not isinstance(name, str) or not TUNING_NAME.match(name):
        problems.append(f"HyperParameterTuningJobName '{name}' must be 1-32 letters, digits and inner hyphens")
    config = request.get("HyperParameterTuningJobConfig") or {}
    definition = request.get("TrainingJobDefinition") or {}
    if not definition:
        problems.append("TrainingJobDefinition is required (TrainingJobDefinitions lists are not supported)")
    strategy = config.get("Strategy")
    if strategy not in STRATEGIES:
        problems.append(f"HyperParameterTuningJobConfig.Strategy '{strategy}' must be one of {', '.join(STRATEGIES)}")
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective") or {}
    limits = config.get("ResourceLimits") or {}
    max_jobs = limits.get("MaxNumberOfTrainingJobs")
    max_parallel = limits.get("MaxParallelTrainingJobs")
    if not isinstance(max_parallel, int) or max_parallel < 1:
        problems.append("ResourceLimits.MaxParallelTrainingJobs must be an integer >= 1")
    if strategy != "Grid" and (not isinstance(max_jobs, int) or max_jobs < 1):
        problems.append("ResourceLimits.MaxNumberOfTrainingJobs must be an integer >= 1")

    algo = None
    spec = definition.get("AlgorithmSpecification") or {}
    try:
        algo = algorithms.get(algorithm_name(spec))
    except KeyError as exc:
        problems.append(f"TrainingJobDefinition.AlgorithmSpecification: {exc.args[0]}")
    space: dict[str, Any] = {}
    if algo is not None:
        if objective.get("Type") not in ("Maximize", "Minimize"):
            problems.append("HyperParameterTuningJobObjective.Type must be Maximize or Minimize")
        if objective.get("MetricName") not in algo.tuning_metrics:
            problems.append(f"objective metric '{objective.get('MetricName')}' must be one of "
                            f"{', '.join(algo.tuning_metrics)}")
        space, range_problems = search_space(algo, config.get("ParameterRanges") or {}, strategy)
        problems += range_problems
        static = definition.get("StaticHyperParameters") or {}
        clash = sorted(set(static) & set(space))
        if clash:
            problems.append(f"hyperparameters {clash} are both static and tuned")
    if problems:
        raise ClientError(problems)
    return {"name": name, "strategy": strategy, "objective": objective, "max_jobs": max_jobs,
            "max_parallel": max_parallel, "space": space, "definition": definition, "algorithm": algo,
            "seed": config.get("RandomSeed")}


def search_space(algo, ranges: dict[str, Any], strategy: str) -> tuple[dict[str, Any], list[str]]:
    """SageMaker ParameterRanges → a Ray Tune search space, every bound checked against
    the algorithm's own hyperparameter rows."""
    from ray import tune

    rows = {p.name: p for p in algo.hyperparameters}
    space, problems = {}, []
    tunable = ", ".join(f"{p.name} ({p.tunable})" for p in algo.hyperparameters if p.tunable)

    def row_for(name: str, kind: str) -> Param | None:
        """The row a range names, if it exists and SageMaker marks it tunable with this kind."""
        if name not in rows:
            problems.append(f"{kind} range names unknown hyperparameter '{name}'")
            return None
        if rows[name].tunable != RANGE_KINDS[kind]:
            problems.append(f"{kind} range names '{name}', which is not tunable as {RANGE_KINDS[kind]} "
                            f"hyperparameter of {algo.name}; tunable: {tunable}")
            return None
        return rows[name]

    numeric = (  # SageMaker's bounds are inclusive; Ray's integer upper bounds are not
        ("ContinuousParameterRanges", float, tune.loguniform, tune.uniform),
        ("IntegerParameterRanges", int, lambda a, b: tune.lograndint(a, b + 1), lambda a, b: tune.randint(a, b + 1)),
    )
    for kind, cast, log_space, linear_space in numeric:
        for r in ranges.get(kind, []):
            row = row_for(r.get("Name"), kind)
            bounds = _bounds(r, row, cast, problems)
            if bounds:
                lo, hi = bounds
                space[row.name] = (log_space if _log_scale(r, lo, hi, problems) else linear_space)(lo, hi)
    for r in ranges.get("CategoricalParameterRanges", []):
        row = row_for(r.get("Name"), "CategoricalParameterRanges")
        values = r.get("Values") or []
        if row is None:
            continue
        if not 1 <= len(values) <= 30:
            problems.append(f"categorical range '{row.name}' needs 1 to 30 values")
            continue
        for v in values:
            try:
                row.parse(v)
            except ValueError as exc:
                problems.append(f"categorical range '{row.name}' value {exc}")
        space[row.name] = tune.grid_search(list(values)) if strategy == "Grid" else tune.choice(list(values))
    if strategy == "Grid" and (ranges.get("ContinuousParameterRanges") or ranges.get("IntegerParameterRanges")):
        problems.append("Strategy Grid takes categorical ranges only")
    if len(space) > 30:
        problems.append(f"{len(space)} tuned hyperparameters; at most 30 are allowed")
    return space, problems


def _bounds(r, row, kind, problems):
    if row is None:
        return None
    try:
        lo, hi = kind(r["MinValue"]), kind(r["MaxValue"])
    except (KeyError, TypeError, ValueError):
        problems.append(f"range '{row.name}' needs numeric MinValue and MaxValue (got {r})")
        return None
    if lo > hi:
        problems.append(f"range '{row.name}': MinValue {lo} exceeds MaxValue {hi}")
        return None
    for value in (lo, hi):
        try:
            row.check(value)
        except ValueError as exc:
            problems.append(f"range '{row.name}' bound {exc}")
            return None
    return lo, hi


def _log_scale(r, lo, hi, problems) -> bool:
    """Logarithmic when asked; `Auto` picks log for positive ranges spanning 2+ decades."""
    scaling = r.get("ScalingType", "Auto")
    if scaling == "Logarithmic":
        if lo <= 0:
            problems.append(f"range '{r['Name']}': Logarithmic scaling needs MinValue > 0")
            return False
        return True
    if scaling == "ReverseLogarithmic":
        problems.append(f"range '{r['Name']}': ReverseLogarithmic scaling is not supported yet; use Linear")
        return False
    return scaling == "Auto" and lo > 0 and hi / lo >= 100


def child_request(tuning: dict[str, Any], params: dict[str, Any], index: int) -> dict[str, Any]:
    d = tuning["definition"]
    static = {str(k): str(v) for k, v in (d.get("StaticHyperParameters") or {}).items()}
    tuned = {k: _to_string(v) for k, v in params.items()}
    return {
        "TrainingJobName": f"{tuning['name']}-{index:03d}-{uuid.uuid4().hex[:8]}",
        "AlgorithmSpecification": d["AlgorithmSpecification"],
        "RoleArn": d.get("RoleArn", ""),
        "HyperParameters": {**static, **tuned, "_tuning_objective_metric": tuning["objective"]["MetricName"]},
        "InputDataConfig": d.get("InputDataConfig", []),
        "OutputDataConfig": d.get("OutputDataConfig", {}),
        "ResourceConfig": d.get("ResourceConfig", {"InstanceType": DEFAULT_INSTANCE_TYPE, "InstanceCount": 1}),
        "StoppingCondition": d.get("StoppingCondition", {"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME}),
        "CheckpointConfig": d.get("CheckpointConfig"),
    }


def _to_string(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def run(request: dict[str, Any], echo=print) -> dict[str, Any]:
    """Run the tuning job; return a DescribeHyperParameterTuningJob-shaped record."""
    import time

    from ray import tune

    from raysight.train import driver
    from raysight.cluster import ensure_ray

    tuning = parse_tuning_job(request)
    created = time.time()
    objective = tuning["objective"]
    metric, mode = objective["MetricName"], "max" if objective["Type"] == "Maximize" else "min"
    ensure_ray()

    def trial(config: dict[str, Any]) -> None:
        from ray.tune.integration.ray_train import TuneReportCallback

        index = _trial_index()
        child = child_request(tuning, config, index)
        record = driver.run(child, callbacks=[TuneReportCallback()])
        # Tune requires the objective in every report: a job that ended without it (failed)
        # reports NaN, which the summaries below read as "no objective", as SageMaker does
        tune.report({"job_name": child["TrainingJobName"], "job_status": record["TrainingJobStatus"],
                     "failure_reason": record.get("FailureReason"), metric: math.nan,
                     **{m["MetricName"]: m["Value"] for m in record["FinalMetricDataList"]}})

    # The generator itself holds MaxParallelTrainingJobs: Tune ignores TuneConfig's
    # max_concurrent_trials for a SearchGenerator (it says so in its log), and every trial's
    # Train worker fits the cluster, so nothing else would bound how many run at once.
    searcher = tune.search.BasicVariantGenerator(random_state=tuning["seed"], max_concurrent=tuning["max_parallel"])
    num_samples = 1 if tuning["strategy"] == "Grid" else tuning["max_jobs"]
    tuner = tune.Tuner(
        tune.with_resources(trial, {"CPU": 0.01}),  # the trial only drives its Train run
        param_space=tuning["space"],
        tune_config=tune.TuneConfig(num_samples=num_samples, search_alg=searcher, metric=metric, mode=mode),
        run_config=tune.RunConfig(name=tuning["name"], storage_path=_tune_storage(tuning), verbose=1),
    )
    results = tuner.fit()
    summaries = []
    for r in results:
        m = r.metrics or {}
        value = m.get(metric)
        if isinstance(value, float) and math.isnan(value):
            value = None
        summaries.append({
            "TrainingJobName": m.get("job_name", ""),
            "TrainingJobStatus": m.get("job_status", "Failed" if r.error else "Stopped"),
            "TunedHyperParameters": {k: _to_string(v) for k, v in (r.config or {}).items()},
            "FinalHyperParameterTuningJobObjectiveMetric":
                {"Type": objective["Type"], "MetricName": metric, "Value": value} if value is not None else None,
            "ObjectiveStatus": "Succeeded" if value is not None else "Failed",
            "FailureReason": m.get("failure_reason") or (str(r.error)[:1024] if r.error else None),
        })
    scored = [s for s in summaries if s["ObjectiveStatus"] == "Succeeded"]
    best = None
    if scored:
        pick = max if mode == "max" else min
        best = pick(scored, key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    out = storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], tuning["name"])
    describe = {
        "HyperParameterTuningJobName": tuning["name"],
        "HyperParameterTuningJobArn": arn("hyper-parameter-tuning-job", tuning["name"]),
        "HyperParameterTuningJobConfig": request.get("HyperParameterTuningJobConfig"),
        "HyperParameterTuningJobStatus": "Completed" if best else "Failed",
        "CreationTime": created,
        "HyperParameterTuningEndTime": time.time(),
        "TrainingJobStatusCounters": _counters(summaries),
        "ObjectiveStatusCounters": {"Succeeded": len(scored), "Pending": 0, "Failed": len(summaries) - len(scored)},
        "BestTrainingJob": best,
        "TrainingJobSummaries": summaries,
    }
    if best:
        model = storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], best["TrainingJobName"],
                             "output", "model.tar.gz")
        storage.write_bytes(storage.join(out, "best", "model.tar.gz"), storage.read_bytes(model))
        describe["BestModelArtifacts"] = storage.join(out, "best", "model.tar.gz")
    else:
        describe["FailureReason"] = "no training job reported the objective metric"
    storage.write_bytes(storage.join(out, "tuning-job.json"), json.dumps(describe, indent=2, default=str).encode())
    echo(format_table(summaries, metric, best))
    return describe


def _trial_index() -> int:
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or ""
    match = re.search(r"(\d+)$", trial_id)
    return int(match.group(1)) + 1 if match else 0


def _tune_storage(tuning) -> str:
    uri = storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], tuning["name"], "tune")
    return uri if storage.is_remote(uri) else storage.path_of(uri)


def _counters(summaries) -> dict[str, int]:
    counts = {"Completed": 0, "InProgress": 0, "RetryableError": 0, "NonRetryableError": 0, "Stopped": 0}
    for s in summaries:
        status = s["TrainingJobStatus"]
        counts["NonRetryableError" if status == "Failed" else status if status in counts else "Stopped"] += 1
    return counts


def format_table(summaries, metric: str, best) -> str:
    keys = sorted({k for s in summaries for k in s["TunedHyperParameters"]})
    header = ["TrainingJobName", "Status", *keys, metric]
    rows = []
    for s in summaries:
        value = (s["FinalHyperParameterTuningJobObjectiveMetric"] or {}).get("Value")
        mark = " *" if best and s["TrainingJobName"] == best["TrainingJobName"] else ""
        rows.append([s["TrainingJobName"] + mark, s["TrainingJobStatus"],
                     *[s["TunedHyperParameters"].get(k, "") for k in keys],
                     "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows), "(* = best)"])
