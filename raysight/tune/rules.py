"""How trials end: early-stopping rules, completion criteria, and winding a tuning job down.

A Tune scheduler's STOP would kill a trial's actor mid-epoch, losing its model and its
job.json. SageMaker instead stops a training job as StopTrainingJob does: the job keeps
its best model and ends `Stopped`. So `Scheduler` turns every STOP into a request on the
trial's stop flag (the named actor `driver.StopSignal` polls) and lets the job end itself.
"""
from __future__ import annotations

import os
import signal
import statistics
import time
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from ray.tune.stopper import Stopper

EPOCHS = "epochs_done"  # the time attribute every per-epoch report carries (1 after the first epoch)
CONVERGENCE_WINDOW, CONVERGENCE_MIN_JOBS, CONVERGENCE_TOLERANCE = 5, 10, 1e-3


def flag_name(trial_id: str) -> str:
    return f"raysight-stop-{trial_id}"


def ending_flag_name(tuning_name: str) -> str:
    return f"raysight-ending-{tuning_name}"


class NotStarted(RuntimeError):
    """A trial due to start while the tuning job winds down; a resume runs it."""


def ending(tuning_name: str) -> bool:
    import ray

    try:
        return ray.get(ray.get_actor(ending_flag_name(tuning_name)).is_set.remote())
    except ValueError:
        return False


def worse(value: float, reference: float, mode: str) -> bool:
    return value < reference if mode == "max" else value > reference


def median_rule_stops(value: float, epochs: int, earlier: list[list[float]], mode: str) -> bool:
    """SageMaker's `Auto` early-stopping rule: after epoch `epochs` of a job, take each earlier
    job's running average of the objective over its first `epochs` epochs, then the median
    of those averages; stop the job if its value at that epoch is worse. Earlier jobs that
    did not reach that epoch have no average there and do not count."""
    averages = [sum(curve[:epochs]) / epochs for curve in earlier if len(curve) >= epochs]
    return bool(averages) and worse(value, statistics.median(averages), mode)


class MedianRule(FIFOScheduler):
    """`TrainingJobEarlyStoppingType: Auto` as a Tune scheduler. Ray's MedianStoppingRule is
    a different rule (each trial's best-so-far result against a time attribute, with a grace
    period and a minimum sample count), so it is not used."""

    def __init__(self, metric: str, mode: str):
        super().__init__()
        self.objective, self.goal = metric, mode
        self.curves: dict[str, list[float]] = {}  # trial id → objective per epoch, in launch order

    def on_trial_add(self, tune_controller, trial):
        self.curves.setdefault(trial.trial_id, [])

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if EPOCHS not in result or self.objective not in result:
            return TrialScheduler.CONTINUE
        epochs, value = int(result[EPOCHS]), float(result[self.objective])
        curve = self.curves.setdefault(trial.trial_id, [])
        del curve[epochs - 1:]
        curve.append(value)
        ids = list(self.curves)
        earlier = [self.curves[i] for i in ids[:ids.index(trial.trial_id)]]
        return TrialScheduler.STOP if median_rule_stops(value, epochs, earlier, self.goal) else TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "SageMaker's median early-stopping rule"


class Completion:
    """TuningJobCompletionCriteria, fed each finished job's final objective (None: no value).

    ConvergenceDetected (SageMaker does not publish its rule): once at least
    CONVERGENCE_MIN_JOBS jobs have an objective, the search has converged when the best of the
    last CONVERGENCE_WINDOW of them beats the best before them by less than
    CONVERGENCE_TOLERANCE times the spread of every objective seen."""

    def __init__(self, criteria: dict[str, Any], mode: str):
        self.criteria, self.mode = criteria, mode
        self.values: list[float] = []
        self.best: float | None = None
        self.not_improving = 0
        self.converged_at: float | None = None

    def add(self, value: float | None, at: float | None = None) -> str | None:
        """The criterion this result (ended at time `at`) meets, if any."""
        if value is None:
            return None
        self.values.append(value)
        if self.best is None or worse(self.best, value, self.mode):
            self.best, self.not_improving = value, 0
        else:
            self.not_improving += 1
        target = self.criteria.get("target")
        if target is not None and not worse(value, target, self.mode):
            return f"TargetObjectiveMetricValue {target:g} reached"
        limit = self.criteria.get("not_improving")
        if limit and self.not_improving >= limit:
            return f"the best objective did not improve in {self.not_improving} training jobs"
        if self.criteria.get("convergence") and self.converged():
            self.converged_at = at or time.time()
            return "convergence detected"
        return None

    def converged(self) -> bool:
        n = len(self.values)
        if n < CONVERGENCE_MIN_JOBS:
            return False
        pick = max if self.mode == "max" else min
        before, recent = pick(self.values[:-CONVERGENCE_WINDOW]), pick(self.values[-CONVERGENCE_WINDOW:])
        spread = max(self.values) - min(self.values)
        gain = (recent - before) if self.mode == "max" else (before - recent)
        return gain < CONVERGENCE_TOLERANCE * spread if spread > 0 else True

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = {"NumberOfTrainingJobsObjectiveNotImproving": self.not_improving}
        if self.converged_at:
            out["ConvergenceDetectedTime"] = self.converged_at
        return out


class Ending:
    """Why the tuning job is winding down, shared by the scheduler, the stopper, the SIGTERM
    handler and the MaxRuntimeInSeconds timer (one per process: Tune pickles schedulers and
    stoppers, so they reach it through the module, not an attribute)."""

    def __init__(self):
        self.reset()

    def reset(self, echo=print, name: str = ""):
        from raysight.train.driver import make_stop_flag

        self.flag = make_stop_flag(ending_flag_name(name)) if name else None  # trials ask it before starting
        self.reason: str | None = None
        self.status: str | None = None  # the tuning job's status once every trial has ended
        self.stopping: set[str] = set()  # trials asked to stop, asked again on each result
        self.controller = None
        self.interrupted = False
        self.echo = echo
        self.completion = Completion({}, "max")

    def begin(self, reason: str, status: str) -> None:
        if self.reason:
            return
        self.reason, self.status = reason, status
        if self.flag is not None:
            self.flag.set.remote()
        self.echo(f"Ending the tuning job ({reason}): stopping the running training jobs")
        for trial in self.running():
            self.judged(trial.trial_id, 0, stop=True)

    def judged(self, trial_id: str, epochs: int, stop: bool) -> None:
        """The verdict on a trial's epoch `epochs` (0: now), to its flag actor, which its
        workers wait on before their next epoch. A stop is asked again on each later result."""
        import ray

        if stop:
            self.stopping.add(trial_id)
        try:
            ray.get_actor(flag_name(trial_id)).decide.remote(epochs, stop)
        except ValueError:  # not made yet: asked again on the trial's next result
            pass

    def running(self) -> list:
        if self.controller is None:
            return []
        return [t for t in self.controller.get_trials() if t.status == "RUNNING"]


ENDING = Ending()


class Scheduler(FIFOScheduler):
    """Wraps the strategy's scheduler (ASHA, MedianRule or none): STOP becomes a stop request,
    and finished trials feed the completion criteria. Returning no trial to run once the job is
    ending only stops Tune preferring one: Tune still starts pending trials, so the trials
    themselves check the ending flag (job.py, NotStarted)."""

    def __init__(self, inner: TrialScheduler | None, max_epochs=None):
        super().__init__()
        self.inner, self.max_epochs = inner, max_epochs

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if self.inner is not None:
            self.inner.set_search_properties(metric, mode, **spec)
        return super().set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller, trial):
        ENDING.controller = tune_controller
        if self.inner is not None:
            self.inner.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        ENDING.controller = tune_controller
        if trial.trial_id in ENDING.stopping:
            ENDING.judged(trial.trial_id, int(result.get(EPOCHS, 0)), stop=True)
            return TrialScheduler.CONTINUE
        decision = TrialScheduler.CONTINUE if self.inner is None else \
            self.inner.on_trial_result(tune_controller, trial, result)
        last = self.max_epochs is not None and result.get(EPOCHS, 0) >= self.max_epochs
        if decision == TrialScheduler.STOP and EPOCHS in result and not last:
            ENDING.echo(f"Early stopping trial {trial.trial_id} after {result[EPOCHS]} epoch(s)")
            ENDING.judged(trial.trial_id, int(result[EPOCHS]), stop=True)
        elif EPOCHS in result:
            ENDING.judged(trial.trial_id, int(result[EPOCHS]), stop=False)
        return TrialScheduler.CONTINUE

    def on_trial_complete(self, tune_controller, trial, result: dict):
        if self.inner is not None:
            self.inner.on_trial_complete(tune_controller, trial, result)
        value = (result or {}).get(self.metric)
        met = ENDING.completion.add(None if value is None or value != value else float(value))
        if met:
            ENDING.begin(met, "Completed")

    def on_trial_error(self, tune_controller, trial):
        if self.inner is not None:
            self.inner.on_trial_error(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial):
        if self.inner is not None:
            self.inner.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        ENDING.controller = tune_controller
        return None if ENDING.reason else super().choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        return self.inner.debug_string() if self.inner is not None else "FIFO"


class EndWhenDrained(Stopper):
    """Once the job is ending and no trial runs: completion criteria and MaxRuntimeInSeconds
    end the experiment (trials never started are dropped); SIGTERM interrupts it as Ctrl+C
    does, so Tune saves its state with the unstarted trials pending, for a resume."""

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        if not ENDING.reason or ENDING.running():
            return False
        if ENDING.status == "Stopped":
            if not ENDING.interrupted:
                ENDING.interrupted = True
                os.kill(os.getpid(), signal.SIGINT)
            return False
        return True


def epoch_report():
    """Ray Train's TuneReportCallback, adding the 1-based epoch count schedulers key on."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReport(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            metrics = [dict(m, **{EPOCHS: int(m["epoch"]) + 1}) if "epoch" in m else m for m in metrics]
            super().after_report(run_context, metrics, checkpoint)

    return EpochReport()
