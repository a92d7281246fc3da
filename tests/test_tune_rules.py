"""Tuning without a cluster: SageMaker's early-stopping rule on hand-made curves, the
completion criteria, warm-start rules, the request checks and the record's shape."""
import copy
import json

import pytest

from raysight.errors import ClientError
from raysight.tune import parse_tuning_job, record, warm
from raysight.tune.rules import Completion, median_rule_stops
from tests.test_tune import tuning_request


def shape_problems(value, shape, path="") -> list[str]:
    """Where `value` breaks botocore's shape: unknown or missing members, wrong types, enums."""
    kind = shape.type_name
    if kind == "structure":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        out = [f"{path}.{k}: not a member" for k in value if k not in shape.members]
        out += [f"{path}.{k}: required" for k in shape.required_members if k not in value]
        for k, v in value.items():
            if k in shape.members:
                out += shape_problems(v, shape.members[k], f"{path}.{k}")
        return out
    if kind == "list":
        return [p for i, v in enumerate(value) for p in shape_problems(v, shape.member, f"{path}[{i}]")] \
            if isinstance(value, list) else [f"{path}: not a list"]
    if kind == "map":
        return [p for k, v in value.items() for p in shape_problems(v, shape.value, f"{path}.{k}")] \
            if isinstance(value, dict) else [f"{path}: not a map"]
    checks = {"string": lambda v: isinstance(v, str), "boolean": lambda v: isinstance(v, bool),
              "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "long": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
              "timestamp": lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool)}
    if kind in checks and not checks[kind](value):
        return [f"{path}: {value!r} is not a {kind}"]
    enum = shape.metadata.get("enum")
    if enum and value not in enum:
        return [f"{path}: {value!r} not in {enum}"]
    return []


def check_output(value: dict, operation: str) -> None:
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(operation).output_shape
    assert shape_problems(value, shape) == []


# --- SageMaker's median rule ----------------------------------------------------------------
def test_median_rule_maximize_compares_with_the_median_of_running_averages():
    earlier = [[0.2, 0.4, 0.6], [0.1, 0.3, 0.5], [0.5, 0.7, 0.9]]
    # after 2 epochs the running averages are 0.3, 0.2, 0.6: median 0.3
    assert median_rule_stops(0.29, 2, earlier, "max")
    assert not median_rule_stops(0.31, 2, earlier, "max")
    # after 3 epochs: 0.4, 0.3, 0.7 -> median 0.4 (a best-so-far rule would use 0.6)
    assert not median_rule_stops(0.45, 3, earlier, "max")
    assert median_rule_stops(0.39, 3, earlier, "max")


def test_median_rule_minimize_and_jobs_that_stopped_before_the_epoch():
    earlier = [[1.0, 0.8], [2.0], [1.2, 1.0]]  # the second job stopped after one epoch
    # after 2 epochs only jobs 1 and 3 count: averages 0.9 and 1.1, median 1.0
    assert median_rule_stops(1.05, 2, earlier, "min")
    assert not median_rule_stops(0.95, 2, earlier, "min")
    # after 1 epoch all three: 1.0, 2.0, 1.2 -> 1.2
    assert median_rule_stops(1.3, 1, earlier, "min") and not median_rule_stops(1.1, 1, earlier, "min")


def test_median_rule_never_stops_the_first_job_or_past_every_earlier_curve():
    assert not median_rule_stops(0.0, 1, [], "max")
    assert not median_rule_stops(0.0, 4, [[0.9, 0.9]], "max")


def test_scheduler_stops_the_worse_of_two_trials_and_keeps_the_first():
    from raysight.tune.rules import MedianRule

    class Trial:
        def __init__(self, trial_id):
            self.trial_id = trial_id

    rule = MedianRule("validation:accuracy", "max")
    first, second = Trial("a"), Trial("b")
    rule.on_trial_add(None, first)
    rule.on_trial_add(None, second)
    decisions = [rule.on_trial_result(None, first, {"epochs_done": 1, "validation:accuracy": 0.2}),
                 rule.on_trial_result(None, first, {"epochs_done": 2, "validation:accuracy": 0.6}),
                 rule.on_trial_result(None, second, {"epochs_done": 1, "validation:accuracy": 0.3}),
                 rule.on_trial_result(None, second, {"epochs_done": 2, "validation:accuracy": 0.35})]
    # epoch 2 of the second: first's running average is 0.4 > 0.35
    assert decisions == ["CONTINUE", "CONTINUE", "CONTINUE", "STOP"]
    assert rule.on_trial_result(None, second, {"job_status": "Stopped"}) == "CONTINUE"  # the final report


# --- completion criteria --------------------------------------------------------------------
def test_completion_target_not_improving_and_convergence():
    assert Completion({"target": 0.9}, "max").add(0.91).startswith("TargetObjectiveMetricValue")
    assert Completion({"target": 0.1}, "min").add(0.2) is None
    c = Completion({"not_improving": 3}, "max")
    assert [c.add(v) for v in (0.5, 0.6, 0.55, None, 0.6, 0.59)][:5] == [None] * 5
    assert c.not_improving == 3 and c.details()["NumberOfTrainingJobsObjectiveNotImproving"] == 3
    c = Completion({"convergence": True}, "max")
    results = [c.add(v, at=i) for i, v in enumerate([0.1, 0.5, 0.8, 0.9, 0.91, 0.9, 0.905, 0.9, 0.91, 0.9])]
    assert results[-1] == "convergence detected" and c.details()["ConvergenceDetectedTime"] == 9
    c = Completion({"convergence": True}, "max")
    assert [c.add(v) for v in [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]][-1] is None  # still improving


# --- request checks -------------------------------------------------------------------------
def base():
    return tuning_request("/data", "/tmp/out", {"train": 10, "validation": 10})


def edit(path, value):
    def apply(r):
        node = r
        for key in path[:-1]:
            node = node[key]
        if value is KeyError:
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return apply


CONFIG = "HyperParameterTuningJobConfig"
RANGES = (CONFIG, "ParameterRanges")
BAD = {
    "name": (edit(("HyperParameterTuningJobName",), "bad_name!"), "HyperParameterTuningJobName 'bad_name!'"),
    "strategy": (edit((CONFIG, "Strategy"), "Annealing"),
                 "Strategy 'Annealing' must be one of Bayesian, Random, Hyperband, Grid"),
    "parallel": (edit((CONFIG, "ResourceLimits", "MaxParallelTrainingJobs"), KeyError),
                 "ResourceLimits.MaxParallelTrainingJobs must be an integer >= 1"),
    "max_jobs": (edit((CONFIG, "ResourceLimits", "MaxNumberOfTrainingJobs"), 0),
                 "ResourceLimits.MaxNumberOfTrainingJobs must be an integer >= 1"),
    "runtime": (edit((CONFIG, "ResourceLimits", "MaxRuntimeInSeconds"), 60),
                "ResourceLimits.MaxRuntimeInSeconds must be an integer within [120, 15768000], got 60"),
    "seed": (edit((CONFIG, "RandomSeed"), -1), "RandomSeed must be an integer >= 0, got -1"),
    "early": (edit((CONFIG, "TrainingJobEarlyStoppingType"), "Sometimes"),
              "TrainingJobEarlyStoppingType 'Sometimes' must be Off or Auto"),
    "objective": (edit((CONFIG, "HyperParameterTuningJobObjective", "MetricName"), "validation:loss"),
                  "HyperParameterTuningJobObjective.MetricName 'validation:loss' must be one of"),
    "objective_type": (edit((CONFIG, "HyperParameterTuningJobObjective", "Type"), "Max"),
                       "HyperParameterTuningJobObjective.Type 'Max' must be Maximize or Minimize"),
    "reverse_int": (edit(RANGES + ("IntegerParameterRanges",), [
        {"Name": "mini_batch_size", "MinValue": "8", "MaxValue": "32", "ScalingType": "ReverseLogarithmic"}]),
        "range 'mini_batch_size': ReverseLogarithmic scaling applies to continuous ranges only"),
    "reverse_bounds": (edit(RANGES + ("ContinuousParameterRanges",), [
        {"Name": "momentum", "MinValue": "0.5", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"},
        {"Name": "weight_decay", "MinValue": "0.5", "MaxValue": "1", "ScalingType": "ReverseLogarithmic"}]),
        "range 'weight_decay': ReverseLogarithmic scaling needs 0 <= MinValue and MaxValue < 1"),
    "log_zero": (edit(RANGES + ("ContinuousParameterRanges",), [
        {"Name": "momentum", "MinValue": "0", "MaxValue": "0.9", "ScalingType": "Logarithmic"}]),
        "range 'momentum': Logarithmic scaling needs MinValue > 0"),
    "scaling": (edit(RANGES + ("ContinuousParameterRanges",), [
        {"Name": "momentum", "MinValue": "0", "MaxValue": "0.9", "ScalingType": "Cubic"}]),
        "range 'momentum': ScalingType 'Cubic' must be one of Auto, Linear, Logarithmic, ReverseLogarithmic"),
    "values": (edit(RANGES + ("CategoricalParameterRanges",), [{"Name": "optimizer", "Values": ["sgd"] * 31}]),
               "categorical range 'optimizer' needs 1 to 30 values, got 31"),
    "twice": (edit(RANGES + ("CategoricalParameterRanges",), [{"Name": "optimizer", "Values": ["sgd"]},
                                                              {"Name": "optimizer", "Values": ["adam"]}]),
              "hyperparameter 'optimizer' has more than one range"),
    "static_and_tuned": (edit(("TrainingJobDefinition", "StaticHyperParameters", "learning_rate"), "0.1"),
                         "hyperparameters ['learning_rate'] are both static and tuned"),
    "too_many": (edit(("TrainingJobDefinition", "StaticHyperParameters"), {f"x{i}": "1" for i in range(99)}),
                 "102 hyperparameters (static, tuned and _tuning_objective_metric); at most 100 are allowed"),
    "hyperband_auto": (lambda r: r[CONFIG].update(Strategy="Hyperband", TrainingJobEarlyStoppingType="Auto"),
                       "TrainingJobEarlyStoppingType must be Off with Strategy Hyperband"),
    "hyperband_resource": (lambda r: (r[CONFIG].update(Strategy="Hyperband"),
                                      r["TrainingJobDefinition"]["StaticHyperParameters"].pop("epochs")),
                           "Strategy Hyperband needs HyperbandStrategyConfig.MaxResource or a static hyperparameter"),
    "hyperband_order": (lambda r: r[CONFIG].update(Strategy="Hyperband", StrategyConfig={
        "HyperbandStrategyConfig": {"MinResource": 5, "MaxResource": 2}}),
        "HyperbandStrategyConfig.MinResource 5 exceeds MaxResource 2"),
    "strategy_config": (lambda r: r[CONFIG].update(StrategyConfig={"HyperbandStrategyConfig": {"MaxResource": 2}}),
                        "StrategyConfig applies to Strategy Hyperband only"),
    "grid_numeric": (lambda r: r[CONFIG].update(Strategy="Grid"), "Strategy Grid takes categorical ranges only"),
    "grid_count": (lambda r: r[CONFIG].update(Strategy="Grid", ParameterRanges={"CategoricalParameterRanges": [
        {"Name": "optimizer", "Values": ["sgd", "adam"]}]}),
        "ResourceLimits.MaxNumberOfTrainingJobs 3 must equal the number of Grid combinations, 2"),
    "not_improving": (edit((CONFIG, "TuningJobCompletionCriteria"), {"BestObjectiveNotImproving": {
        "MaxNumberOfTrainingJobsNotImproving": 2}}), "MaxNumberOfTrainingJobsNotImproving must be an integer >= 3"),
    "target": (edit((CONFIG, "TuningJobCompletionCriteria"), {"TargetObjectiveMetricValue": "high"}),
               "TuningJobCompletionCriteria.TargetObjectiveMetricValue must be a number"),
    "convergence": (edit((CONFIG, "TuningJobCompletionCriteria"), {"ConvergenceDetected": {
        "CompleteOnConvergence": "Yes"}}), "CompleteOnConvergence 'Yes' must be Disabled or Enabled"),
    "warm_type": (edit(("WarmStartConfig",), {"WarmStartType": "Hot", "ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": "p"}]}), "WarmStartConfig.WarmStartType 'Hot'"),
    "warm_count": (edit(("WarmStartConfig",), {"WarmStartType": "TransferLearning", "ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": f"p{i}"} for i in range(6)]}),
        "WarmStartConfig.ParentHyperParameterTuningJobs must list 1 to 5 tuning jobs"),
    "static_hp": (edit(("TrainingJobDefinition", "StaticHyperParameters", "num_layers"), "19"),
                  "num_layers"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_invalid_tuning_request_is_refused_naming_the_field(case):
    change, message = BAD[case]
    request = base()
    change(request)
    if case == "grid_count":  # two combinations, three jobs asked for
        request[CONFIG]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 3
        request["TrainingJobDefinition"]["StaticHyperParameters"].pop("optimizer")
    with pytest.raises(ClientError) as e:
        parse_tuning_job(request)
    assert message in str(e.value), str(e.value)


def test_reverse_logarithmic_ranges_sample_near_one():
    from ray.tune.search.sample import Float

    from raysight.tune.request import tuned_values

    request = base()
    request["TrainingJobDefinition"]["StaticHyperParameters"].pop("momentum")
    request[CONFIG]["ParameterRanges"]["ContinuousParameterRanges"].append(
        {"Name": "momentum", "MinValue": "0.5", "MaxValue": "0.999", "ScalingType": "ReverseLogarithmic"})
    space = parse_tuning_job(request)["space"]
    domain = space["reverse-log:momentum"]
    assert isinstance(domain, Float) and (domain.lower, domain.upper) == pytest.approx((0.001, 0.5))
    values = [tuned_values({"reverse-log:momentum": domain.sample()})["momentum"] for _ in range(2000)]
    assert all(0.5 <= v <= 0.999 for v in values)
    assert sum(v > 0.9 for v in values) > len(values) / 2  # most of the mass is close to 1


def test_grid_counts_its_combinations():
    request = base()
    request["TrainingJobDefinition"]["StaticHyperParameters"].pop("optimizer")
    request[CONFIG].update(Strategy="Grid", ParameterRanges={"CategoricalParameterRanges": [
        {"Name": "optimizer", "Values": ["sgd", "adam", "nag"]}]})
    request[CONFIG]["ResourceLimits"].pop("MaxNumberOfTrainingJobs")
    assert parse_tuning_job(request)["max_jobs"] == 3


def test_hyperband_resources_come_from_the_static_epochs():
    request = base()
    request[CONFIG]["Strategy"] = "Hyperband"
    assert parse_tuning_job(request)["hyperband"] == {"min": 1, "max": 2}


# --- warm start -----------------------------------------------------------------------------
def parent_files(tmp_path, name, request, summaries, status="Completed"):
    tuning = parse_tuning_job(request)
    rec = record.describe(tuning, summaries, status, 0.0)
    rec["HyperParameterTuningJobName"] = name
    (tmp_path / name).mkdir()
    (tmp_path / name / "tuning-job.json").write_text(json.dumps(rec))
    (tmp_path / name / "training-jobs.json").write_text(json.dumps({"TrainingJobSummaries": summaries}))


def summary(lr, batch, value):
    return {"TrainingJobName": f"p-001-{int(lr * 1000):08d}", "TrainingJobArn": "arn", "CreationTime": 0.0,
            "TrainingJobStatus": "Completed", "ObjectiveStatus": "Succeeded",
            "TunedHyperParameters": {"learning_rate": str(lr), "mini_batch_size": str(batch)},
            "FinalHyperParameterTuningJobObjectiveMetric": {"Type": "Maximize", "MetricName": "validation:accuracy",
                                                            "Value": value}}


def warm_request(tmp_path, parents, kind="IdenticalDataAndAlgorithm"):
    request = tuning_request("/data", str(tmp_path), {"train": 10, "validation": 10})
    request["HyperParameterTuningJobName"] = "child"
    request["WarmStartConfig"] = {"WarmStartType": kind, "ParentHyperParameterTuningJobs": [
        {"HyperParameterTuningJobName": p} for p in parents]}
    return request


def test_warm_start_seeds_the_parents_points_and_finds_the_overall_best(tmp_path):
    parent = tuning_request("/data", str(tmp_path), {"train": 10, "validation": 10})
    parent_files(tmp_path, "p", parent, [summary(0.02, 16, 0.7), summary(0.5, 16, 0.9), summary(0.05, 12, 0.8)])
    tuning = parse_tuning_job(warm_request(tmp_path, ["p"]))
    parents = warm.load(tuning)
    points, rewards = warm.evaluated_points(tuning, parents)
    # 0.5 lies outside this job's learning_rate range [0.01, 0.1]: not a point of its space
    assert points == [{"learning_rate": 0.02, "mini_batch_size": 16}, {"learning_rate": 0.05, "mini_batch_size": 12}]
    assert rewards == [0.7, 0.8]
    ours = summary(0.03, 20, 0.85)
    assert warm.overall_best(parents, ours, "max")["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == 0.9


WARM_RULES = {
    "missing": (lambda p: None, "parent tuning job 'p' not found"),
    "running": (lambda p: "InProgress", "has not finished (status InProgress)"),
    "objective": (lambda p: p[CONFIG]["HyperParameterTuningJobObjective"].update(MetricName="train:accuracy"),
                  "has objective Maximize train:accuracy; this job's must be the same"),
    "count": (lambda p: p["TrainingJobDefinition"]["StaticHyperParameters"].update(top_k="2"),
              "static and tunable hyperparameters, this job"),
    "type": (lambda p: (p[CONFIG]["ParameterRanges"].pop("IntegerParameterRanges"),
                        p[CONFIG]["ParameterRanges"].update(CategoricalParameterRanges=[
                            {"Name": "mini_batch_size", "Values": ["8", "16"]}])),
             "hyperparameter 'mini_batch_size' changes type from Categorical to Integer"),
    "recursive": (lambda p: p.update(WarmStartConfig={"WarmStartType": "TransferLearning",
                                                      "ParentHyperParameterTuningJobs": [
                                                          {"HyperParameterTuningJobName": "q"}]}),
                  "is itself warm-started"),
    "data": (lambda p: p["TrainingJobDefinition"]["InputDataConfig"][0].update(ChannelName="other"),
             "needs the same TrainingJobDefinition.InputDataConfig; use TransferLearning"),
}


@pytest.mark.parametrize("case", sorted(WARM_RULES))
def test_warm_start_rules_are_enforced(tmp_path, case):
    change, message = WARM_RULES[case]
    parent = tuning_request("/data", str(tmp_path), {"train": 10, "validation": 10})
    status = "Completed"
    if case != "missing":
        if case == "running":
            status = change(parent)
        edited = copy.deepcopy(parent)
        if case not in ("running",):
            change(edited)
        parent_files(tmp_path, "p", parent, [summary(0.02, 16, 0.7)], status=status)
        stored = json.loads((tmp_path / "p" / "tuning-job.json").read_text())
        stored["HyperParameterTuningJobConfig"] = edited[CONFIG]
        stored["TrainingJobDefinition"] = edited["TrainingJobDefinition"]
        if "WarmStartConfig" in edited:
            stored["WarmStartConfig"] = edited["WarmStartConfig"]
        (tmp_path / "p" / "tuning-job.json").write_text(json.dumps(stored))
    with pytest.raises(ClientError) as e:
        warm.load(parse_tuning_job(warm_request(tmp_path, ["p"])))
    assert message in str(e.value), str(e.value)


# --- the record -----------------------------------------------------------------------------
def test_the_record_has_the_shape_of_describe_and_list_for_tuning_job(tmp_path):
    request = warm_request(tmp_path, ["p"])
    request[CONFIG]["TuningJobCompletionCriteria"] = {"TargetObjectiveMetricValue": 0.99}
    tuning = parse_tuning_job(request)
    failed = dict(summary(0.01, 8, 0.0), TrainingJobStatus="Failed", ObjectiveStatus="Failed",
                  FailureReason="ClientError: bad")
    failed.pop("FinalHyperParameterTuningJobObjectiveMetric")
    summaries = [summary(0.02, 16, 0.7), failed]
    rec = record.describe(tuning, summaries, "Completed", 1.0, completion=Completion({}, "max").details(),
                          overall_best=summaries[0])
    check_output(rec, "DescribeHyperParameterTuningJob")
    assert rec["OverallBestTrainingJob"] == rec["BestTrainingJob"] == summaries[0]
    assert rec["TrainingJobStatusCounters"]["NonRetryableError"] == 1
    check_output({"TrainingJobSummaries": summaries}, "ListTrainingJobsForHyperParameterTuningJob")
    bad = dict(rec, HyperParameterTuningJobStatus="Done")
    import botocore.session

    shape = botocore.session.get_session().get_service_model("sagemaker").operation_model(
        "DescribeHyperParameterTuningJob").output_shape
    assert shape_problems(bad, shape) == [".HyperParameterTuningJobStatus: 'Done' not in " +
                                          str(shape.members["HyperParameterTuningJobStatus"].metadata["enum"])]


# --- a child's log stream ---------------------------------------------------------------------
def test_a_crashed_child_logs_its_traceback_and_reason_under_its_tag(tmp_path, monkeypatch, capsys):
    """A tuning child's stream is its tuning job's log filtered by the child's tag, so a crash
    outside ClientError must reach it tagged: traceback first, then the FailureReason."""
    from raysight.train import driver

    def crash(request):
        raise RuntimeError("a fault of the job's own")

    monkeypatch.setattr(driver, "prepare", crash)
    lines: list[str] = []
    request = {"TrainingJobName": "t-001-abc", "OutputDataConfig": {"S3OutputPath": str(tmp_path)}}
    job = driver.run(request, echo=lines.append, tag="[t-001-abc] ")
    assert job["TrainingJobStatus"] == "Failed"
    assert job["FailureReason"] == "AlgorithmError: a fault of the job's own"
    assert lines[0] == "[t-001-abc] Traceback (most recent call last):", lines
    assert "[t-001-abc] RuntimeError: a fault of the job's own" in lines
    assert lines[-1] == "[t-001-abc] AlgorithmError: a fault of the job's own"
    assert all(line.startswith("[t-001-abc] ") for line in lines)
    assert "Traceback" not in capsys.readouterr().err  # nothing untagged
    assert json.loads((tmp_path / "t-001-abc" / "output" / "job.json").read_text())["TrainingJobStatus"] == "Failed"
