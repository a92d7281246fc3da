"""A CreateHyperParameterTuningJob request → Ray Tune trials, each a real training job.

Each trial runs `raysight.train.driver.run` on a child CreateTrainingJob request; Ray
Train reports every epoch to Tune, so schedulers see per-epoch objectives. The strategy
picks the searcher (Bayesian: Optuna's GP sampler; Random, Hyperband: Tune's random
variants; Grid: every combination) and the scheduler (Hyperband: ASHA; `Auto` early
stopping: SageMaker's median rule, rules.MedianRule); rules.Scheduler wraps either, so a
stopped trial ends as a Stopped training job with its best model.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from typing import Any

from raysight import storage
from raysight.errors import ClientError
from raysight.job_request import arn
from raysight.tune import record as rec
from raysight.tune import warm
from raysight.tune.children import child_request, child_tag
from raysight.tune.request import parse_tuning_job, tuned_values

REDUCTION_FACTOR = 3  # Hyperband's η: keep the best third at each rung (Li et al.; SageMaker's Hyperband)
FINAL = ("Completed", "Failed")
NOT_STARTED = "not started: the tuning job is ending"


def run(request: dict[str, Any], echo=print) -> dict[str, Any]:
    """Run (or resume) the tuning job; return its DescribeHyperParameterTuningJob record."""
    from ray import tune

    from raysight.cluster import WORKER_GROUP_START_TIMEOUT, ensure_ray
    from raysight.tune import rules

    tuning = parse_tuning_job(request)
    previous = rec.read_json(rec.output_uri(tuning, "tuning-job.json"))
    if previous and previous.get("HyperParameterTuningJobStatus") in FINAL:
        raise ClientError(f"ResourceInUse: tuning job '{tuning['name']}' already ended "
                          f"{previous['HyperParameterTuningJobStatus']} ({rec.output_uri(tuning, 'tuning-job.json')}); "
                          "choose a new HyperParameterTuningJobName")
    parents = warm.load(tuning) if tuning["warm_start"] else None
    created = previous["CreationTime"] if previous else time.time()
    # A trial whose workers do not fit yet waits for a running one to end (Ray Train would
    # give up after 60 s); a request that could never fit still fails at once.
    os.environ.setdefault(WORKER_GROUP_START_TIMEOUT, str(7 * 24 * 3600))
    ensure_ray()
    rules.ENDING.reset(echo, tuning["name"])
    rules.ENDING.completion = rules.Completion(tuning["completion"], tuning["mode"])
    path = storage.join(_tune_storage(tuning), tuning["name"])
    trainable = tune.with_resources(_trial_function(tuning), {"CPU": 0.01})  # the trial only drives its Train run
    if previous and tune.Tuner.can_restore(path):
        done = (rec.read_json(rec.output_uri(tuning, "training-jobs.json")) or {}).get("TrainingJobSummaries", [])
        for s in sorted(done, key=lambda s: s.get("TrainingEndTime") or 0):
            rules.ENDING.completion.add(rec.objective(s), s.get("TrainingEndTime"))
        echo(f"Resuming tuning job {tuning['name']} from {path} ({len(done)} training job(s) already ended)")
        # Trials that were due to start when the job was stopped raised NotStarted: run them now
        tuner = tune.Tuner.restore(path, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=tuning["space"],
            tune_config=tune.TuneConfig(num_samples=1 if tuning["strategy"] == "Grid" else tuning["max_jobs"],
                                        search_alg=_searcher(tuning, parents), scheduler=_scheduler(tuning),
                                        metric=tuning["metric"], mode=tuning["mode"]),
            run_config=tune.RunConfig(name=tuning["name"], storage_path=_tune_storage(tuning), verbose=0,
                                      stop=rules.EndWhenDrained(), callbacks=[_progress(tuning)]),
        )
    rec.write(tuning, rec.describe(tuning, [], "InProgress", created), [])
    echo(f"Tuning job {tuning['name']}: {tuning['strategy']}, up to {tuning['max_jobs']} training jobs, "
         f"{tuning['max_parallel']} at once, {tuning['mode']}imizing {tuning['metric']}")
    with _ending_triggers(tuning, created, rules.ENDING):
        results = tuner.fit()
    summaries = [rec.summary(tuning, r.metrics or {}, tuned_values(r.config or {}), r.error)
                 for r in results if (r.metrics or {}).get("job_name") or (r.error and NOT_STARTED not in str(r.error))]
    best = rec.best_of(summaries, tuning["mode"])
    status = rules.ENDING.status or ("Completed" if best else "Failed")
    if rules.ENDING.status == "Completed" and not best:
        status = "Failed"
    record = rec.describe(tuning, summaries, status, created,
                          failure=None if best else "no training job reported the objective metric",
                          completion=rules.ENDING.completion.details() if tuning["completion"] else None,
                          overall_best=warm.overall_best(parents, best, tuning["mode"]) if parents else None)
    rec.write(tuning, record, summaries)
    if best:
        model = storage.join(tuning["definition"]["OutputDataConfig"]["S3OutputPath"], best["TrainingJobName"],
                             "output", "model.tar.gz")
        storage.write_bytes(rec.output_uri(tuning, "best", "model.tar.gz"), storage.read_bytes(model))
    try:
        storage.write_bytes(rec.output_uri(tuning, "tuning-results.png"), rec.picture(tuning, summaries))
    except Exception as exc:  # noqa: BLE001 - a missing picture must not fail a tuning job
        echo(f"could not draw the tuning results: {exc}")
    echo(rec.format_table(summaries, tuning["metric"], best))
    if rules.ENDING.reason:
        echo(f"Tuning job {tuning['name']} ended {status}: {rules.ENDING.reason}")
    return record


def _trial_function(tuning: dict[str, Any]):
    judged = _judged(tuning)

    def trial(config: dict[str, Any]) -> None:
        from ray import tune

        from raysight.train import driver
        from raysight.tune import rules

        context = tune.get_context()
        trial_id = context.get_trial_id() or ""
        if rules.ending(tuning["name"]):  # Tune starts pending trials whatever the scheduler says
            raise rules.NotStarted(NOT_STARTED)
        index = trial_index(context.get_trial_dir(), context.get_trial_name(), tuning["strategy"] != "Bayesian")
        child = child_request(tuning, tuned_values(config), index, trial_id)
        flag = driver.make_stop_flag(rules.flag_name(trial_id), scheduled=judged)
        job = driver.run(child, callbacks=[rules.epoch_report()], stop_flag=flag,
                         tuning_job_arn=arn("hyper-parameter-tuning-job", tuning["name"]),
                         tag=child_tag(child["TrainingJobName"]))
        # Tune requires the objective in every report: a job that ended without it (failed)
        # reports NaN, which the summaries read as "no objective", as SageMaker does
        tune.report({"job_name": child["TrainingJobName"], "job_status": job["TrainingJobStatus"],
                     "failure_reason": job.get("FailureReason"), "job_created": job.get("CreationTime"),
                     "job_started": job.get("TrainingStartTime"), "job_ended": job.get("TrainingEndTime"),
                     tuning["metric"]: float("nan"),
                     **{m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}})

    return trial


def trial_index(trial_dir: str, trial_name: str, zero_based: bool) -> int:
    """The trial's launch number, 1-based as SageMaker's NNN. Tune names a trial's folder
    `<trial name>_<counter>_<params>_<date>`; its variant generator counts from 0, its
    searcher-driven generator (Optuna) from 1."""
    tag = os.path.basename(trial_dir.rstrip("/")).removeprefix(trial_name + "_")
    match = re.match(r"(\d+)", tag)
    return (int(match.group(1)) + (1 if zero_based else 0)) if match else 0


def _searcher(tuning: dict[str, Any], parents):
    from ray import tune

    if tuning["strategy"] != "Bayesian":
        # The generator itself holds MaxParallelTrainingJobs: Tune ignores TuneConfig's
        # max_concurrent_trials for a SearchGenerator, and every trial's Train workers are
        # outside Tune's resource accounting, so nothing else would bound how many run at once.
        return tune.search.BasicVariantGenerator(random_state=tuning["seed"], max_concurrent=tuning["max_parallel"])
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    # GP-based, as SageMaker's Bayesian search is; a few random jobs first give it something to fit.
    startup = max(2, min(10, tuning["max_jobs"] // 4))
    sampler = optuna.samplers.GPSampler(seed=tuning["seed"], n_startup_trials=startup)
    points, rewards = warm.evaluated_points(tuning, parents) if parents else (None, None)
    search = OptunaSearch(sampler=sampler, points_to_evaluate=points, evaluated_rewards=rewards)
    return tune.search.ConcurrencyLimiter(search, max_concurrent=tuning["max_parallel"])


def _judged(tuning: dict[str, Any]) -> bool:
    """A rule judges every epoch (Hyperband's ASHA, or `Auto` early stopping), so the workers
    await its verdict before the next one."""
    return tuning["strategy"] == "Hyperband" or tuning["early_stopping"] == "Auto"


def _scheduler(tuning: dict[str, Any]):
    from ray.tune.schedulers import ASHAScheduler

    from raysight.tune import rules

    if not _judged(tuning):
        return rules.Scheduler(None)
    if tuning["strategy"] == "Hyperband":
        hb = tuning["hyperband"]
        inner = ASHAScheduler(time_attr=rules.EPOCHS, max_t=hb["max"], grace_period=hb["min"],
                              reduction_factor=REDUCTION_FACTOR, brackets=1)
        return rules.Scheduler(inner, max_epochs=hb["max"])
    return rules.Scheduler(rules.MedianRule(tuning["metric"], tuning["mode"]))


def _progress(tuning: dict[str, Any]):
    from ray.tune import Callback

    from raysight.tune import rules

    metric, mode, total = tuning["metric"], tuning["mode"], tuning["max_jobs"]

    class Progress(Callback):
        """One line per finished training job: `k/N done, best so far`; and tuning-job.json and
        training-jobs.json brought up to date, so a Describe while the job runs sees its counters."""

        def __init__(self):
            self.values: list[float] = []

        def on_trial_complete(self, iteration, trials, trial, **info):
            try:
                _write_progress(tuning, trials, trial)
            except Exception as exc:  # noqa: BLE001 - a progress record must not end the tuning job
                rules.ENDING.echo(f"could not record the tuning job's progress: {exc}")
            result = trial.last_result or {}
            value = result.get(metric)
            if isinstance(value, float) and value == value:
                self.values.append(value)
            done = sum(t.status == "TERMINATED" or t is trial for t in trials if (t.last_result or {}).get("job_name"))
            best = (max if mode == "max" else min)(self.values) if self.values else None
            rules.ENDING.echo(f"{done}/{total} training jobs done ({result.get('job_name')}: "
                              f"{result.get('job_status')}), best so far {metric}="
                              + ("-" if best is None else f"{best:.6f}"))

    return Progress()


def _write_progress(tuning: dict[str, Any], trials, finished) -> None:
    summaries = [rec.summary(tuning, t.last_result, tuned_values(t.config or {}))
                 for t in trials if (t.last_result or {}).get("job_name") and (t is finished or t.is_finished())]
    previous = rec.read_json(rec.output_uri(tuning, "tuning-job.json")) or {}
    record = rec.describe(tuning, summaries, "InProgress", previous.get("CreationTime") or time.time())
    record["TrainingJobStatusCounters"]["InProgress"] = sum(
        t.status == "RUNNING" and t is not finished for t in trials)
    rec.write(tuning, record, summaries)


class _ending_triggers:
    """SIGTERM (`ray job stop`) and MaxRuntimeInSeconds start the wind-down while Tune runs."""

    def __init__(self, tuning, created, ending):
        self.tuning, self.created, self.ending = tuning, created, ending

    def __enter__(self):
        self.previous, self.timer = None, None
        try:
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.ending.begin(
                "StopHyperParameterTuningJob (SIGTERM)", "Stopped"))
        except ValueError:  # not the main thread
            pass
        if self.tuning["max_runtime"]:
            left = self.tuning["max_runtime"] - (time.time() - self.created)
            self.timer = threading.Timer(max(left, 0), self.ending.begin,
                                         ("ResourceLimits.MaxRuntimeInSeconds reached", "Completed"))
            self.timer.daemon = True
            self.timer.start()
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        if self.timer is not None:
            self.timer.cancel()
        return False


def _tune_storage(tuning) -> str:
    uri = rec.output_uri(tuning, "tune")
    return uri if storage.is_remote(uri) else storage.path_of(uri)
