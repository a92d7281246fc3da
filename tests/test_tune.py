"""`raysight tune`: real Ray Tune runs, each trial a real training job, for every strategy."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from raysight import algorithms
from raysight.errors import ClientError
from raysight.tune import parse_tuning_job
from tests.conftest import ROOT, run_cli, tiny_request, write_json


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


def outputs(tmp_path, name):
    """tuning-job.json and its summaries, each checked against botocore's output shape."""
    from tests.test_tune_rules import check_output

    record = json.loads((tmp_path / name / "tuning-job.json").read_text())
    listed = json.loads((tmp_path / name / "training-jobs.json").read_text())
    check_output(record, "DescribeHyperParameterTuningJob")
    check_output(listed, "ListTrainingJobsForHyperParameterTuningJob")
    assert (tmp_path / name / "tuning-results.png").read_bytes()[:4] == b"\x89PNG"
    return record, listed["TrainingJobSummaries"]


def child(tmp_path, summary):
    return json.loads((tmp_path / summary["TrainingJobName"] / "output" / "job.json").read_text())


def epochs_trained(tmp_path, summary):
    return len(json.loads((tmp_path / summary["TrainingJobName"] / "output" / "metrics.json").read_text()))


@pytest.mark.slow
def test_two_trial_random_search_then_a_warm_started_bayesian_search(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    # relative paths, as `raysight tune jobs/….json` users write them: read from the directory
    # `raysight tune` runs in (the repository), not from the trials' working directories
    request = write_json(tmp_path / "tuning.json", tuning_request(os.path.relpath(root, ROOT),
                                                                  os.path.relpath(tmp_path, ROOT), counts))
    proc = run_cli("tune", request)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert record["HyperParameterTuningJobStatus"] == "Completed"
    assert record["TrainingJobStatusCounters"]["Completed"] == 2
    assert "2/2 training jobs done" in proc.stdout
    assert len(summaries) == 2
    rates = {s["TunedHyperParameters"]["learning_rate"] for s in summaries}
    assert len(rates) == 2 and all(0.01 <= float(r) <= 0.1 for r in rates)
    assert all(8 <= int(s["TunedHyperParameters"]["mini_batch_size"]) <= 32 for s in summaries)
    for s in summaries:
        assert s["TrainingJobName"].startswith("tiny-tuning-")
        job = child(tmp_path, s)
        assert job["TrainingJobStatus"] == "Completed" and job["TuningJobArn"] == record["HyperParameterTuningJobArn"]
        assert job["HyperParameters"]["_tuning_objective_metric"] == "validation:accuracy"
        value = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}["validation:accuracy"]
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
    # each child's lines, its workers' included, say whose they are
    for s in summaries:
        assert f"[{s['TrainingJobName']}] Epoch[1] Validation-accuracy=" in proc.stdout
        assert f"[{s['TrainingJobName']}] Training job {s['TrainingJobName']}: " in proc.stdout

    # Bayesian, warm-started from the job above: its points seed the GP, and the record
    # names the best job of both
    warm = tuning_request(root, str(tmp_path), counts)
    warm["HyperParameterTuningJobName"] = "tiny-warm"
    warm["HyperParameterTuningJobConfig"]["Strategy"] = "Bayesian"
    warm["WarmStartConfig"] = {"WarmStartType": "IdenticalDataAndAlgorithm",
                               "ParentHyperParameterTuningJobs": [{"HyperParameterTuningJobName": "tiny-tuning"}]}
    proc = run_cli("tune", write_json(tmp_path / "warm.json", warm))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "tiny-warm")
    assert record["HyperParameterTuningJobStatus"] == "Completed" and len(summaries) == 2
    assert all(0.01 <= float(s["TunedHyperParameters"]["learning_rate"]) <= 0.1 for s in summaries)
    overall = max([best, *summaries], key=lambda s: s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"])
    assert record["OverallBestTrainingJob"]["TrainingJobName"] == overall["TrainingJobName"]
    assert record["WarmStartConfig"] == warm["WarmStartConfig"]
    # a finished tuning job is not run again under its name
    proc = run_cli("tune", write_json(tmp_path / "warm.json", warm))
    assert proc.returncode == 2 and "ResourceInUse: tuning job 'tiny-warm' already ended Completed" in proc.stderr


def test_tuning_request_problems_are_named(tmp_path):
    bad = tuning_request("/data", str(tmp_path), {"train": 10}, Strategy="Annealing")
    ranges = bad["HyperParameterTuningJobConfig"]["ParameterRanges"]
    ranges["ContinuousParameterRanges"][0]["MaxValue"] = "2"
    ranges["CategoricalParameterRanges"] = [{"Name": "optimizer", "Values": ["sgd", "lion"]}]
    ranges["IntegerParameterRanges"].append({"Name": "depth", "MinValue": "1", "MaxValue": "2"})
    with pytest.raises(ClientError) as e:
        parse_tuning_job(bad)
    text = str(e.value)
    for part in ("Strategy 'Annealing' must be one of Bayesian, Random, Hyperband, Grid",
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
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert record["HyperParameterTuningJobStatus"] == "Failed" and "BestTrainingJob" not in record
    assert record["TrainingJobStatusCounters"]["NonRetryableError"] == 2
    assert record["ObjectiveStatusCounters"] == {"Succeeded": 0, "Pending": 0, "Failed": 2}
    for s in summaries:
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
    request["HyperParameterTuningJobConfig"]["ResourceLimits"].pop("MaxNumberOfTrainingJobs")  # Grid: 2
    request["TrainingJobDefinition"].update(StaticHyperParameters=static, AlgorithmSpecification=job[
        "AlgorithmSpecification"], InputDataConfig=job["InputDataConfig"])
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "od-grid")
    assert sorted(s["TunedHyperParameters"]["optimizer"] for s in summaries) == ["adam", "rmsprop"]
    values = [s["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] for s in summaries]
    assert record["BestTrainingJob"]["FinalHyperParameterTuningJobObjectiveMetric"]["Value"] == min(values)
    assert all(s["TrainingJobStatus"] == "Completed" for s in summaries)


def test_workers_await_the_schedulers_verdict_before_their_next_epoch(ray_cluster):
    import threading

    from raysight.train.driver import make_stop_flag
    from raysight.train.loop import StopCheck

    flag = make_stop_flag("raysight-stop-verdict-test", scheduled=True)
    check = StopCheck(None, flag)
    sent = threading.Event()

    def judge():
        sent.set()
        flag.decide.remote(1, False)

    threading.Timer(0.5, judge).start()
    check.await_verdict(1)
    assert sent.is_set() and check.reason is None  # it waited for the verdict, which was "go on"
    flag.decide.remote(2, True)
    check.await_verdict(2)
    assert check.reason == "Stopped" and check.requested()
    unjudged = StopCheck(None, make_stop_flag(scheduled=False))
    started = time.time()
    unjudged.await_verdict(1)  # no scheduler: nothing to wait for
    assert time.time() - started < unjudged.VERDICT_WAIT_S / 10 and unjudged.reason is None


def assert_stopped_early_with_a_model(tmp_path, summaries, full_epochs):
    stopped = [s for s in summaries if s["TrainingJobStatus"] == "Stopped"]
    assert stopped, [(s["TrainingJobName"], s["TrainingJobStatus"]) for s in summaries]
    for s in stopped:
        assert child(tmp_path, s)["TrainingJobStatus"] == "Stopped"
        assert (tmp_path / s["TrainingJobName"] / "output" / "model.tar.gz").stat().st_size > 0
        assert epochs_trained(tmp_path, s) < full_epochs
        assert s["ObjectiveStatus"] == "Succeeded"  # a stopped job keeps its last objective
    return stopped


@pytest.mark.slow
def test_hyperband_stops_weak_trials_early_and_keeps_their_models(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts, Strategy="Hyperband",
                             StrategyConfig={"HyperbandStrategyConfig": {"MinResource": 1, "MaxResource": 3}})
    request["HyperParameterTuningJobConfig"]["ResourceLimits"].update(MaxNumberOfTrainingJobs=4)
    request["HyperParameterTuningJobConfig"]["ParameterRanges"]["ContinuousParameterRanges"][0].update(
        MinValue="0.0001", MaxValue="0.2")
    request["TrainingJobDefinition"]["StaticHyperParameters"]["epochs"] = "3"
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert len(summaries) == 4 and record["HyperParameterTuningJobStatus"] == "Completed"
    stopped = assert_stopped_early_with_a_model(tmp_path, summaries, 3)
    # ASHA's one rung below MaxResource is epoch 1, and workers await each verdict before the
    # next epoch: a stopped job trained exactly 1 epoch, however fast its epochs ran
    assert [epochs_trained(tmp_path, s) for s in stopped] == [1] * len(stopped)
    assert record["TrainingJobStatusCounters"]["Stopped"] == len(stopped)
    assert "Early stopping trial" in proc.stdout


@pytest.mark.slow
def test_auto_early_stopping_and_a_trial_that_does_not_fit_waits_for_the_stopped_one(ray_cluster, digits_small,
                                                                                     tmp_path):
    """Grid over the optimizer with SageMaker's median rule. Each job asks for 5 CPU workers of
    the cluster's 8, so of 2 parallel trials one queues for the other's resources; the run only
    ends if a stopped trial gives its workers back."""
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts, Strategy="Grid", TrainingJobEarlyStoppingType="Auto",
                             ParameterRanges={"CategoricalParameterRanges": [
                                 {"Name": "optimizer", "Values": ["sgd", "adam", "sgd"]}]})
    request["HyperParameterTuningJobConfig"]["ResourceLimits"] = {"MaxParallelTrainingJobs": 2}
    static = request["TrainingJobDefinition"]["StaticHyperParameters"]
    static.pop("optimizer")
    static.update(epochs="4", learning_rate="0.05")
    request["TrainingJobDefinition"]["ResourceConfig"]["InstanceCount"] = 5
    for channel in request["TrainingJobDefinition"]["InputDataConfig"]:
        # seeds each job's weights, order and augmentation: whether the rule stops a job must not
        # depend on the run (unseeded, a CI-class run once ended with none stopped)
        channel["ShuffleConfig"] = {"Seed": 1}
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert len(summaries) == 3
    stopped = assert_stopped_early_with_a_model(tmp_path, summaries, 4)
    # Ray may start either of the first two trials first, so order by when each ended
    ordered = sorted(summaries, key=lambda s: child(tmp_path, s)["TrainingEndTime"])
    assert ordered[0] not in stopped  # the job that ran first had no earlier jobs to be compared with
    # each later job's workers waited for the earlier job's: all its epochs ran after that one ended
    for earlier, later in zip(ordered, ordered[1:]):
        seconds = sum(r["seconds"] for r in json.loads(
            (tmp_path / later["TrainingJobName"] / "output" / "metrics.json").read_text()))
        assert child(tmp_path, later)["TrainingEndTime"] - child(tmp_path, earlier)["TrainingEndTime"] >= seconds


@pytest.mark.slow
def test_target_objective_completes_the_tuning_job_early(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts,
                             TuningJobCompletionCriteria={"TargetObjectiveMetricValue": 0.01})
    request["HyperParameterTuningJobConfig"]["ResourceLimits"].update(MaxNumberOfTrainingJobs=4)
    proc = run_cli("tune", write_json(tmp_path / "tuning.json", request))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert len(summaries) == 1 and record["HyperParameterTuningJobStatus"] == "Completed"
    assert record["TuningJobCompletionDetails"] == {"NumberOfTrainingJobsObjectiveNotImproving": 0}
    assert "TargetObjectiveMetricValue 0.01 reached" in proc.stdout


@pytest.mark.slow
def test_sigterm_stops_every_running_job_and_a_rerun_resumes(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts)
    request["HyperParameterTuningJobConfig"]["ResourceLimits"].update(MaxNumberOfTrainingJobs=3,
                                                                      MaxParallelTrainingJobs=2)
    request["TrainingJobDefinition"]["StaticHyperParameters"]["epochs"] = "40"
    path = write_json(tmp_path / "tuning.json", request)
    proc = subprocess.Popen([sys.executable, "-m", "raysight", "tune", path], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    deadline = time.time() + 300
    while time.time() < deadline:  # both jobs have finished an epoch (each epoch checkpoints)
        jobs = list(tmp_path.glob("tiny-tuning-*"))
        if len(jobs) == 2 and all(list(j.glob("checkpoints/*/checkpoint_*")) for j in jobs):
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(1)
    signalled = time.time()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert time.time() - signalled < 60, out[-3000:]
    assert proc.returncode == 1, out[-3000:]
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert record["HyperParameterTuningJobStatus"] == "Stopped"
    assert len(summaries) == 2 and all(s["TrainingJobStatus"] == "Stopped" for s in summaries), summaries
    assert_stopped_early_with_a_model(tmp_path, summaries, 40)
    ended = {s["TrainingJobName"]: child(tmp_path, s)["TrainingEndTime"] for s in summaries}

    # the same request again: the stopped jobs stay as they are, the third one runs
    request["TrainingJobDefinition"]["StaticHyperParameters"]["epochs"] = "40"
    rerun = run_cli("tune", path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "Resuming tuning job tiny-tuning" in rerun.stdout
    record, summaries = outputs(tmp_path, "tiny-tuning")
    assert record["HyperParameterTuningJobStatus"] == "Completed" and len(summaries) == 3
    assert {s["TrainingJobName"]: child(tmp_path, s)["TrainingEndTime"] for s in summaries
            if s["TrainingJobName"] in ended} == ended
    assert [s["TrainingJobStatus"] for s in summaries if s["TrainingJobName"] not in ended] == ["Completed"]
