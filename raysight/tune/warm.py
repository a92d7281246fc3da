"""WarmStartConfig: parent tuning jobs, checked against SageMaker's rules, seed the search.

Parents are found by name under the same S3OutputPath as this job
(`<S3OutputPath>/<parent>/tuning-job.json` and `training-jobs.json`, which every
`raysight tune` run writes), since SageMaker finds them by name within an account.
"""
from __future__ import annotations

from typing import Any

from raysight import storage
from raysight.errors import ClientError
from raysight.tune import record as rec
from raysight.tune.request import RANGE_KINDS, REVERSED

MAX_CHANGES = 10


def kinds(config: dict, definition: dict) -> dict[str, str]:
    """Each hyperparameter → its kind: Integer, Continuous, Categorical or Static."""
    out = {str(k): "Static" for k in (definition.get("StaticHyperParameters") or {})}
    for field, kind in RANGE_KINDS.items():
        for r in (config.get("ParameterRanges") or {}).get(field, []):
            out[r.get("Name")] = kind
    return out


def load(tuning: dict[str, Any]) -> list[dict[str, Any]]:
    """The parents' records and training-job summaries, or one ClientError naming every rule broken."""
    problems, parents = [], []
    request = tuning["request"]
    ours = kinds(request["HyperParameterTuningJobConfig"], tuning["definition"])
    static = tuning["static"]
    for name in tuning["warm_start"]["parents"]:
        uri = storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], name, "tuning-job.json")
        parent = rec.read_json(uri)
        where = f"parent tuning job '{name}'"
        if parent is None:
            problems.append(f"{where} not found: no {uri}")
            continue
        status = parent.get("HyperParameterTuningJobStatus")
        if status not in ("Completed", "Stopped", "Failed"):
            problems.append(f"{where} has not finished (status {status}); parents must be Completed, Stopped or Failed")
        if parent.get("WarmStartConfig"):
            problems.append(f"{where} is itself warm-started; parents may not be")
        config, definition = parent.get("HyperParameterTuningJobConfig") or {}, parent.get("TrainingJobDefinition") or {}
        theirs_objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective") or {}
        if theirs_objective.get("MetricName") != tuning["metric"] or theirs_objective.get("Type") != \
                tuning["objective"]["Type"]:
            problems.append(f"{where} has objective {theirs_objective.get('Type')} "
                            f"{theirs_objective.get('MetricName')}; this job's must be the same")
        theirs = kinds(config, definition)
        if len(theirs) != len(ours):
            problems.append(f"{where} has {len(theirs)} static and tunable hyperparameters, this job "
                            f"{len(ours)}; the total must be the same")
        for hp in sorted(set(theirs) & set(ours)):
            a, b = theirs[hp], ours[hp]
            if "Static" not in (a, b) and a != b:
                problems.append(f"{where}: hyperparameter '{hp}' changes type from {a} to {b}")
        parent_static = {str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
        changes = sum(1 for hp in ours if ours[hp] == "Static" and theirs.get(hp) not in (None, "Static")) + \
            sum(1 for hp, v in static.items() if hp in parent_static and parent_static[hp] != v)
        if changes > MAX_CHANGES:
            problems.append(f"{where}: {changes} changes (tunable made static, or static values changed); "
                            f"at most {MAX_CHANGES} are allowed")
        if tuning["warm_start"]["type"] == "IdenticalDataAndAlgorithm":
            for field in ("InputDataConfig", "AlgorithmSpecification"):
                if definition.get(field) != tuning["definition"].get(field):
                    problems.append(f"{where}: WarmStartType IdenticalDataAndAlgorithm needs the same "
                                    f"TrainingJobDefinition.{field}; use TransferLearning")
        summaries = (rec.read_json(storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], name,
                                                "training-jobs.json")) or {}).get("TrainingJobSummaries", [])
        parents.append({"name": name, "record": parent, "summaries": summaries})
    if problems:
        raise ClientError(problems)
    return parents


def evaluated_points(tuning: dict[str, Any], parents) -> tuple[list[dict], list[float]]:
    """The parents' evaluated points that fall inside this job's search space, with their
    objectives, for the Bayesian searcher (Optuna records them as finished trials)."""
    points, rewards = [], []
    for parent in parents:
        for s in parent["summaries"]:
            value = rec.objective(s)
            point = _in_space(tuning["space"], s.get("TunedHyperParameters") or {})
            if value is not None and point is not None:
                points.append(point)
                rewards.append(value)
    return points, rewards


def _in_space(space: dict[str, Any], tuned: dict[str, str]) -> dict[str, Any] | None:
    point = {}
    for key, domain in space.items():
        raw = tuned.get(key.removeprefix(REVERSED))
        if raw is None:
            return None
        if hasattr(domain, "categories"):
            if raw not in domain.categories:
                return None
            point[key] = raw
            continue
        if not hasattr(domain, "lower"):
            return None
        value = float(raw)
        value = 1 - value if key.startswith(REVERSED) else value
        integer = type(domain.lower) is int
        value = int(round(value)) if integer else value
        upper = domain.upper - 1 if integer else domain.upper  # Ray's integer upper bound is exclusive
        if not domain.lower <= value <= upper:
            return None
        point[key] = value
    return point


def overall_best(parents, best, mode: str) -> dict[str, Any] | None:
    """The best training job of this job and all its parents."""
    candidates = [p["record"].get("BestTrainingJob") for p in parents] + [best]
    return rec.best_of([c for c in candidates if c], mode)
