"""A CreateHyperParameterTuningJob request → the validated pieces a tuning run needs.

Everything is checked here, before a trial starts: the config's fields as
../shared/spec/tuning.md gives them, every range against the algorithm's own
hyperparameter rows (`Param.tunable` says which may be tuned, and how), and the
training job definition itself, as `raysight train --validate-only` would.
"""
from __future__ import annotations

import math
import re
from typing import Any

from raysight import algorithms
from raysight.errors import ClientError
from raysight.hyperparams import Param
from raysight.job_request import algorithm_name, with_absolute_locations

TUNING_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,31}$")
STRATEGIES = ("Bayesian", "Random", "Hyperband", "Grid")
# A range's kind → the Param.tunable value a hyperparameter needs to be tuned with it.
RANGE_KINDS = {"ContinuousParameterRanges": "Continuous", "IntegerParameterRanges": "Integer",
               "CategoricalParameterRanges": "Categorical"}
SCALING = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
# Static hyperparameters Hyperband reads MaxResource from when StrategyConfig does not give it.
EPOCH_NAMES = ("epochs", "numepochs", "n-epochs", "n_epochs", "num_epochs")
MAX_TUNED, MAX_TOTAL, MAX_VALUES = 30, 100, 30
MAX_RUNTIME = (120, 15768000)
# ReverseLogarithmic ranges are searched as log(1 - x); the search space holds 1 - x under this prefix.
REVERSED = "reverse-log:"


def parse_tuning_job(request: dict[str, Any]) -> dict[str, Any]:
    """Validate the request; return the pieces the run needs, or raise one ClientError
    naming every problem."""
    problems: list[str] = []
    if not isinstance(request, dict):
        raise ClientError("the tuning request must be a JSON object")
    name = request.get("HyperParameterTuningJobName")
    if not isinstance(name, str) or not TUNING_NAME.match(name):
        problems.append(f"HyperParameterTuningJobName '{name}' must be 1-32 letters, digits and inner hyphens")
    config = request.get("HyperParameterTuningJobConfig") or {}
    definition = with_absolute_locations(request.get("TrainingJobDefinition") or {})
    if request.get("TrainingJobDefinitions"):
        problems.append("TrainingJobDefinitions (multi-algorithm tuning) is not supported; "
                        "give one TrainingJobDefinition")
    elif not definition:
        problems.append("TrainingJobDefinition is required")
    if request.get("Autotune"):
        problems.append("Autotune is not supported; give ParameterRanges and ResourceLimits")
    strategy = config.get("Strategy")
    if strategy not in STRATEGIES:
        problems.append(f"HyperParameterTuningJobConfig.Strategy '{strategy}' must be one of {', '.join(STRATEGIES)}")
    objective = config.get("HyperParameterTuningJobObjective") or definition.get("TuningObjective") or {}
    limits = config.get("ResourceLimits") or {}
    max_jobs, max_parallel = limits.get("MaxNumberOfTrainingJobs"), limits.get("MaxParallelTrainingJobs")
    if not _int_at_least(max_parallel, 1):
        problems.append("ResourceLimits.MaxParallelTrainingJobs must be an integer >= 1")
    if (strategy != "Grid" or max_jobs is not None) and not _int_at_least(max_jobs, 1):
        problems.append("ResourceLimits.MaxNumberOfTrainingJobs must be an integer >= 1")
    max_runtime = limits.get("MaxRuntimeInSeconds")
    if max_runtime is not None and not (_int_at_least(max_runtime, MAX_RUNTIME[0]) and max_runtime <= MAX_RUNTIME[1]):
        problems.append(f"ResourceLimits.MaxRuntimeInSeconds must be an integer within "
                        f"[{MAX_RUNTIME[0]}, {MAX_RUNTIME[1]}], got {max_runtime!r}")
    seed = config.get("RandomSeed")
    if seed is not None and not _int_at_least(seed, 0):
        problems.append(f"HyperParameterTuningJobConfig.RandomSeed must be an integer >= 0, got {seed!r}")
    early = config.get("TrainingJobEarlyStoppingType", "Off")
    if early not in ("Off", "Auto"):
        problems.append(f"TrainingJobEarlyStoppingType '{early}' must be Off or Auto")
    elif early == "Auto" and strategy == "Hyperband":
        problems.append("TrainingJobEarlyStoppingType must be Off with Strategy Hyperband, "
                        "which stops weak training jobs itself")
    if config.get("StrategyConfig") and strategy != "Hyperband":
        problems.append("StrategyConfig applies to Strategy Hyperband only")
    completion = completion_criteria(config.get("TuningJobCompletionCriteria"), problems)
    warm = warm_start_config(request.get("WarmStartConfig"), problems)

    algo = None
    try:
        algo = algorithms.get(algorithm_name(definition.get("AlgorithmSpecification") or {}))
    except KeyError as exc:
        problems.append(f"TrainingJobDefinition.AlgorithmSpecification: {exc.args[0]}")
    space: dict[str, Any] = {}
    static = {str(k): str(v) for k, v in (definition.get("StaticHyperParameters") or {}).items()}
    hyperband = None
    if algo is not None:
        if objective.get("Type") not in ("Maximize", "Minimize"):
            problems.append(f"HyperParameterTuningJobObjective.Type '{objective.get('Type')}' must be "
                            "Maximize or Minimize")
        if objective.get("MetricName") not in algo.tuning_metrics:
            problems.append(f"HyperParameterTuningJobObjective.MetricName '{objective.get('MetricName')}' "
                            f"must be one of {', '.join(algo.tuning_metrics)}")
        ranges = config.get("ParameterRanges") or {}
        space, range_problems = search_space(algo, ranges, strategy)
        problems += range_problems
        clash = sorted(set(static) & {k.removeprefix(REVERSED) for k in space})
        if clash:
            problems.append(f"hyperparameters {clash} are both static and tuned")
        total = len(static) + len(space) + 1  # + _tuning_objective_metric
        if total > MAX_TOTAL:
            problems.append(f"{total} hyperparameters (static, tuned and _tuning_objective_metric); "
                            f"at most {MAX_TOTAL} are allowed")
        if strategy == "Grid" and not range_problems:
            combinations = math.prod(len(r.get("Values") or []) for r in ranges.get("CategoricalParameterRanges", []))
            if max_jobs is not None and max_jobs != combinations:
                problems.append(f"ResourceLimits.MaxNumberOfTrainingJobs {max_jobs} must equal the number of "
                                f"Grid combinations, {combinations}, or be left out")
            max_jobs = combinations
        if strategy == "Hyperband":
            hyperband = hyperband_config(config.get("StrategyConfig") or {}, static, problems)
    if problems:
        raise ClientError(problems)
    tuning = {"name": name, "strategy": strategy, "objective": objective, "metric": objective["MetricName"],
              "mode": "max" if objective["Type"] == "Maximize" else "min", "max_jobs": max_jobs,
              "max_parallel": max_parallel, "max_runtime": max_runtime, "space": space, "static": static,
              "definition": definition, "algorithm": algo, "seed": seed, "early_stopping": early,
              "hyperband": hyperband, "completion": completion, "warm_start": warm, "request": request}
    _check_definition(tuning)
    return tuning


def _int_at_least(value, low: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def completion_criteria(criteria, problems: list[str]) -> dict[str, Any]:
    criteria = criteria or {}
    out: dict[str, Any] = {}
    field = "TuningJobCompletionCriteria"
    if "TargetObjectiveMetricValue" in criteria:
        target = criteria["TargetObjectiveMetricValue"]
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not math.isfinite(target):
            problems.append(f"{field}.TargetObjectiveMetricValue must be a number, got {target!r}")
        else:
            out["target"] = float(target)
    not_improving = (criteria.get("BestObjectiveNotImproving") or {}).get("MaxNumberOfTrainingJobsNotImproving")
    if "BestObjectiveNotImproving" in criteria:
        if not _int_at_least(not_improving, 3):
            problems.append(f"{field}.BestObjectiveNotImproving.MaxNumberOfTrainingJobsNotImproving must be an "
                            f"integer >= 3, got {not_improving!r}")
        else:
            out["not_improving"] = not_improving
    if "ConvergenceDetected" in criteria:
        mode = (criteria["ConvergenceDetected"] or {}).get("CompleteOnConvergence", "Disabled")
        if mode not in ("Disabled", "Enabled"):
            problems.append(f"{field}.ConvergenceDetected.CompleteOnConvergence '{mode}' must be Disabled or Enabled")
        out["convergence"] = mode == "Enabled"
    return out


def warm_start_config(warm, problems: list[str]) -> dict[str, Any] | None:
    """The config's shape; the rules that need the parents' records are warm.py's."""
    if not warm:
        return None
    kind = warm.get("WarmStartType")
    if kind not in ("IdenticalDataAndAlgorithm", "TransferLearning"):
        problems.append(f"WarmStartConfig.WarmStartType '{kind}' must be IdenticalDataAndAlgorithm or TransferLearning")
    parents = warm.get("ParentHyperParameterTuningJobs") or []
    if not isinstance(parents, list) or not 1 <= len(parents) <= 5:
        problems.append("WarmStartConfig.ParentHyperParameterTuningJobs must list 1 to 5 tuning jobs")
        return None
    names = [p.get("HyperParameterTuningJobName") if isinstance(p, dict) else None for p in parents]
    for n in names:
        if not isinstance(n, str) or not TUNING_NAME.match(n):
            problems.append(f"WarmStartConfig parent HyperParameterTuningJobName '{n}' is not a tuning job name")
    return {"type": kind, "parents": names}


def hyperband_config(strategy_config: dict, static: dict[str, str], problems: list[str]) -> dict[str, int] | None:
    """MinResource/MaxResource in epochs. MaxResource falls back on the static epochs, under
    any of the names SageMaker reads."""
    hb = strategy_config.get("HyperbandStrategyConfig") or {}
    low, high = hb.get("MinResource", 1), hb.get("MaxResource")
    if high is None:
        given = [static[n] for n in EPOCH_NAMES if n in static]
        try:
            high = int(given[0]) if given else None
        except ValueError:
            high = None
        if high is None:
            problems.append("Strategy Hyperband needs HyperbandStrategyConfig.MaxResource or a static "
                            f"hyperparameter giving the epochs ({', '.join(EPOCH_NAMES)})")
            return None
    if not _int_at_least(low, 1) or not _int_at_least(high, 1) or high > 20000:
        problems.append(f"HyperbandStrategyConfig MinResource ({low!r}) and MaxResource ({high!r}) must be "
                        "integers within [1, 20000]")
        return None
    if low > high:
        problems.append(f"HyperbandStrategyConfig.MinResource {low} exceeds MaxResource {high}")
        return None
    return {"min": low, "max": high}


def search_space(algo, ranges: dict[str, Any], strategy: str) -> tuple[dict[str, Any], list[str]]:
    """SageMaker ParameterRanges → a Ray Tune search space, every bound checked against
    the algorithm's own hyperparameter rows."""
    from ray import tune

    rows = {p.name: p for p in algo.hyperparameters}
    space, problems = {}, []
    tunable = ", ".join(f"{p.name} ({p.tunable})" for p in algo.hyperparameters if p.tunable)
    if ranges.get("AutoParameters"):
        problems.append("ParameterRanges.AutoParameters is not supported; give explicit ranges")

    def row_for(name: str, kind: str) -> Param | None:
        """The row a range names, if it exists and SageMaker marks it tunable with this kind."""
        if name not in rows:
            problems.append(f"{kind} range names unknown hyperparameter '{name}'")
            return None
        if rows[name].tunable != RANGE_KINDS[kind]:
            problems.append(f"{kind} range names '{name}', which is not tunable as {RANGE_KINDS[kind]} "
                            f"hyperparameter of {algo.name}; tunable: {tunable}")
            return None
        if name in space or REVERSED + name in space:
            problems.append(f"hyperparameter '{name}' has more than one range")
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
            if not bounds:
                continue
            lo, hi = bounds
            scale = _scale(r, kind, lo, hi, problems)
            if scale == "reverse":  # x = 1 - y with y log-uniform in [1 - hi, 1 - lo]
                space[REVERSED + row.name] = tune.loguniform(1 - hi, 1 - lo) if hi > lo else 1 - lo
            elif scale:
                space[row.name] = (log_space if scale == "log" else linear_space)(lo, hi) if hi > lo else lo
    for r in ranges.get("CategoricalParameterRanges", []):
        row = row_for(r.get("Name"), "CategoricalParameterRanges")
        values = r.get("Values") or []
        if row is None:
            continue
        if not 1 <= len(values) <= MAX_VALUES:
            problems.append(f"categorical range '{row.name}' needs 1 to {MAX_VALUES} values, got {len(values)}")
            continue
        for v in values:
            try:
                row.parse(v)
            except ValueError as exc:
                problems.append(f"categorical range '{row.name}' value {exc}")
        space[row.name] = tune.grid_search(list(values)) if strategy == "Grid" else tune.choice(list(values))
    if strategy == "Grid" and (ranges.get("ContinuousParameterRanges") or ranges.get("IntegerParameterRanges")):
        problems.append("Strategy Grid takes categorical ranges only")
    if strategy == "Grid" and not ranges.get("CategoricalParameterRanges"):
        problems.append("Strategy Grid needs at least one CategoricalParameterRanges entry")
    if len(space) > MAX_TUNED:
        problems.append(f"{len(space)} tuned hyperparameters; at most {MAX_TUNED} are allowed")
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


def _scale(r, kind, lo, hi, problems) -> str | None:
    """"log", "linear" or "reverse"; None when the scaling is refused. `Auto` picks log for
    positive ranges spanning two decades or more, and linear otherwise."""
    scaling = r.get("ScalingType", "Auto")
    name = r["Name"]
    if scaling not in SCALING:
        problems.append(f"range '{name}': ScalingType '{scaling}' must be one of {', '.join(SCALING)}")
        return None
    if scaling == "Logarithmic":
        if lo <= 0:
            problems.append(f"range '{name}': Logarithmic scaling needs MinValue > 0")
            return None
        return "log"
    if scaling == "ReverseLogarithmic":
        if kind != "ContinuousParameterRanges":
            problems.append(f"range '{name}': ReverseLogarithmic scaling applies to continuous ranges only")
            return None
        if not (0 <= lo and hi < 1):
            problems.append(f"range '{name}': ReverseLogarithmic scaling needs 0 <= MinValue and MaxValue < 1")
            return None
        return "reverse"
    return "log" if scaling == "Auto" and lo > 0 and hi / lo >= 100 else "linear"


def tuned_values(config: dict[str, Any]) -> dict[str, Any]:
    """A trial's config → hyperparameter values (ReverseLogarithmic ranges mapped back)."""
    return {k.removeprefix(REVERSED): (1 - v if k.startswith(REVERSED) else v) for k, v in config.items()}


def _check_definition(tuning: dict[str, Any]) -> None:
    """The definition as a training job with each range at its low end: bad static
    hyperparameters, channels or output are refused now, not once per trial."""
    from raysight.train.driver import prepare
    from raysight.tune.children import child_request

    sample = {}
    for key, domain in tuning["space"].items():
        if isinstance(domain, dict) and "grid_search" in domain:
            sample[key] = domain["grid_search"][0]
        elif hasattr(domain, "categories"):
            sample[key] = domain.categories[0]
        elif hasattr(domain, "lower"):
            sample[key] = domain.lower
        else:
            sample[key] = domain
    prepare(child_request(tuning, tuned_values(sample), 0))
