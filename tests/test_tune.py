"""`raysight tune`: a real two-trial Ray Tune run, each trial a real training job."""
import json

import pytest

from raysight import algorithms
from raysight.errors import ClientError
from raysight.tune import parse_tuning_job
from tests.conftest import run_cli, tiny_request, write_json


def tuning_request(root, out, counts, **config):
    job = tiny_request(root, out, "unused", counts, epochs="2")
    static = {k: v for k, v in job["HyperParameters"].items() if k not in ("learning_rate", "mini_batch_size")}
    return {
        "HyperParameterTuningJobName": "tiny-tuning",
        "HyperParameterTuningJobConfig": {
            "Strategy": "Random",
            "RandomSeed": 7,
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 2, "MaxParallelTrainingJobs": 1},
            "ParameterRanges": {
                "ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.01", "MaxValue": "0.1",
                                               "ScalingType": "Logarithmic"}],
                "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "8", "MaxValue": "32"}],
            },
            **config,
        },
        "TrainingJobDefinition": {
            "StaticHyperParameters": static,
            "AlgorithmSpecification": job["AlgorithmSpecification"],
            "RoleArn": job["RoleArn"],
            "InputDataConfig": job["InputDataConfig"],
            "OutputDataConfig": job["OutputDataConfig"],
            "ResourceConfig": job["ResourceConfig"],
            "StoppingCondition": job["StoppingCondition"],
        },
    }


@pytest.mark.slow
def test_two_trial_random_search(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = write_json(tmp_path / "tuning.json", tuning_request(root, str(tmp_path), counts))
    proc = run_cli("tune", request)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "tiny-tuning" / "tuning-job.json") as f:
        record = json.load(f)
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    assert record["TrainingJobStatusCounters"]["Completed"] == 2
    summaries = record["TrainingJobSummaries"]
    assert len(summaries) == 2
    rates = {s["TunedHyperParameters"]["learning_rate"] for s in summaries}
    assert len(rates) == 2 and all(0.01 <= float(r) <= 0.1 for r in rates)
    assert all(8 <= int(s["TunedHyperParameters"]["mini_batch_size"]) <= 32 for s in summaries)
    for s in summaries:
        assert s["TrainingJobName"].startswith("tiny-tuning-")
        with open(tmp_path / s["TrainingJobName"] / "output" / "job.json") as f:
            child = json.load(f)
        assert child["TrainingJobStatus"] == "Completed"
        assert child["HyperParameters"]["_tuning_objective_metric"] == "validation:accuracy"
        value = {m["MetricName"]: m["Value"] for m in child["FinalMetricDataList"]}["validation:accuracy"]
        assert s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == pytest.approx(value)
    # MaxParallelTrainingJobs: 1 — the jobs ran one after the other, never at once.
    windows = sorted((child["CreationTime"], child["TrainingEndTime"]) for child in (
        json.load(open(tmp_path / s["TrainingJobName"] / "output" / "job.json")) for s in summaries))
    assert windows[0][1] <= windows[1][0], windows
    best = record["BestTrainingJob"]
    assert best["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == max(
        s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries)
    assert (tmp_path / "tiny-tuning" / "best" / "model.tar.gz").read_bytes() == \
        (tmp_path / best["TrainingJobName"] / "output" / "model.tar.gz").read_bytes()
    assert best["TrainingJobName"] + " *" in proc.stdout  # the table marks the best trial


def test_tuning_request_problems_are_named(tmp_path):
    bad = tuning_request("/data", str(tmp_path), {"train": 10}, Strategy="Annealing")
    ranges = bad["HyperParameterTuningJobConfig"]["ParameterRanges"]
    ranges["ContinuousParameterRanges"][0]["MaxValue"] = "2"
    ranges["CategoricalParameterRanges"] = [{"Name": "optimizer", "Values": ["sgd", "lion"]}]
    ranges["IntegerParameterRanges"].append({"Name": "depth", "MinValue": "1", "MaxValue": "2"})
    with pytest.raises(ClientError) as e:
        parse_tuning_job(bad)
    text = str(e.value)
    for part in ("Strategy 'Annealing' must be one of Random, Grid",
                 "range 'learning_rate' bound must be within [0, 1], got '2.0'",
                 "categorical range 'optimizer' value must be one of sgd, adam, rmsprop, nag, got 'lion'",
                 "IntegerParameterRanges range names unknown hyperparameter 'depth'"):
        assert part in text, part


def test_search_space_scaling():
    from ray.tune.search.sample import Float, Integer

    from raysight.tune import search_space

    algo = algorithms.get("image-classification")
    space, problems = search_space(algo, {
        "ContinuousParameterRanges": [{"Name": "learning_rate", "MinValue": "0.0001", "MaxValue": "0.5"},
                                      {"Name": "momentum", "MinValue": "0", "MaxValue": "0.99"}],
        "IntegerParameterRanges": [{"Name": "mini_batch_size", "MinValue": "8", "MaxValue": "512",
                                    "ScalingType": "Linear"}]}, "Random")
    assert problems == []
    assert isinstance(space["learning_rate"], Float) and "LogUniform" in str(space["learning_rate"].get_sampler())
    assert "LogUniform" not in str(space["momentum"].get_sampler())
    assert isinstance(space["mini_batch_size"], Integer)
    assert {space["mini_batch_size"].lower, space["mini_batch_size"].upper} == {8, 513}


def test_only_tunable_hyperparameters_may_be_tuned_with_their_kind(tmp_path):
    bad = tuning_request("/data", str(tmp_path), {"train": 10})
    ranges = bad["HyperParameterTuningJobConfig"]["ParameterRanges"]
    ranges["IntegerParameterRanges"].append({"Name": "num_classes", "MinValue": "2", "MaxValue": "10"})
    ranges["CategoricalParameterRanges"] = [{"Name": "mini_batch_size", "Values": ["8", "16"]}]
    with pytest.raises(ClientError) as e:
        parse_tuning_job(bad)
    text = str(e.value)
    assert "IntegerParameterRanges range names 'num_classes', which is not tunable as Integer" in text
    assert "CategoricalParameterRanges range names 'mini_batch_size'" in text
    assert "tunable: beta_1 (Continuous), beta_2 (Continuous), eps (Continuous), gamma (Continuous), " \
           "learning_rate (Continuous), mini_batch_size (Integer), momentum (Continuous), optimizer (Categorical), " \
           "weight_decay (Continuous)" in text


@pytest.mark.slow
def test_failed_trials_are_reported_with_their_reasons(ray_cluster, digits_small, tmp_path):
    """Every trial fails (use_pretrained_model=1 with no weights anywhere): each summary says
    Failed with the training job's own FailureReason, the counters count them, the tuning job
    is Failed and `raysight tune` exits 1."""
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts)
    request["TrainingJobDefinition"]["StaticHyperParameters"].update(use_pretrained_model="1", num_layers="18")
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request),
                   env={"RAYSIGHT_PRETRAINED_WEIGHTS": str(tmp_path / "no-weights"), "TORCH_HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "tiny-tuning" / "tuning-job.json") as f:
        record = json.load(f)
    assert record["HyperParameterTuningJobStatus"] == "Failed" and record["BestTrainingJob"] is None
    assert record["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert record["ObjectiveStatusCounters"] == {"Succeeded": 0, "Pending": 0, "Failed": 2}
    for s in record["TrainingJobSummaries"]:
        assert s["TrainingJobStatus"] == "Failed" and s["ObjectiveStatus"] == "Failed"
        assert s["FailureReason"].startswith("ClientError: use_pretrained_model=1: no ImageNet weights for resnet18")


@pytest.mark.slow
def test_grid_search_minimizing_over_an_object_detector(ray_cluster, tmp_path):
    """Grid over a categorical range (every value once, whatever MaxNumberOfTrainingJobs says),
    Minimize, on object detection: the best trial is the one with the lowest objective."""
    from raysight.sample_data import shapes

    root = str(tmp_path / "shapes")
    counts = shapes.write(root, 16, 8, 64, seed=2, formats=("json",))
    job = shapes.training_request(root, str(tmp_path), "json", name="unused", counts=counts, epochs="1",
                                  mini_batch_size="8")
    static = {k: v for k, v in job["HyperParameters"].items() if k != "optimizer"}
    request = tuning_request(root, str(tmp_path), counts)
    request["HyperParameterTuningJobName"] = "od-grid"
    request["HyperParameterTuningJobConfig"].update(
        Strategy="Grid", HyperParameterTuningJobObjective={"Type": "Minimize", "MetricName": "validation:mAP"},
        ParameterRanges={"CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["adam", "rmsprop"]}]})
    request["HyperParameterTuningJobConfig"].pop("RandomSeed")
    request["HyperParameterTuningJobConfig"]["ResourceLimits"]["MaxNumberOfTrainingJobs"] = 1
    request["TrainingJobDefinition"].update(StaticHyperParameters=static, AlgorithmSpecification=job[
        "AlgorithmSpecification"], InputDataConfig=job["InputDataConfig"])
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    with open(tmp_path / "od-grid" / "tuning-job.json") as f:
        record = json.load(f)
    summaries = record["TrainingJobSummaries"]
    assert sorted(s["TunedHyperParameters"]["optimizer"] for s in summaries) == ["adam", "rmsprop"]
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert record["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == min(values)
    assert all(s["TrainingJobStatus"] == "Completed" for s in summaries)
