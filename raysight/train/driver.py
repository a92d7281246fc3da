"""A CreateTrainingJob request → a Ray Train run → model.tar.gz and job.json.

Order matters: everything that can be checked (request, hyperparameters,
channels, index files, labels) is checked before a worker starts, and job.json
is written whatever happens, so a failed job still says why.
"""
from __future__ import annotations

import json
import os
import time
import traceback
from typing import Any

from raysight import algorithms, artifacts, plots, storage
from raysight.cluster import ensure_ray, scaling_for
from raysight.errors import ClientError, client_error_text
from raysight.hyperparams import parse_hyperparameters
from raysight.job_request import DEFAULT_MAX_RUNTIME, TrainingJob, arn, parse_training_job


def prepare(request: dict[str, Any]) -> tuple[TrainingJob, Any, dict[str, Any]]:
    """Validate without touching data (and without importing torch or Ray):
    (job, algorithm, parsed hyperparameters)."""
    job = parse_training_job(request, algorithms.names())
    algo = algorithms.get(job.algorithm)
    hp = parse_hyperparameters(algo.hyperparameters, job.hyperparameters)
    problems = algo.check(hp, job)
    if problems:
        raise ClientError(problems)
    return job, algo, hp


def output_prefix(job: TrainingJob) -> str:
    return storage.join(job.output_path, job.name, "output")


def run(request: dict[str, Any], echo=print, callbacks=(), stop_flag=None, tuning_job_arn=None,
        tag: str = "") -> dict[str, Any]:
    """Run one training job to its end; return the DescribeTrainingJob-shaped record.
    `stop_flag` (see `make_stop_flag`) lets a caller other than SIGTERM stop it, as a
    tuning job's early-stopping rule does. `tag` starts every line the job logs, its
    workers' included: a tuning job's children share one log, and the API splits it by tag."""
    start = time.time()
    if tag:
        echo = tagged(echo, tag)
    describe = _describe_base(request, start)
    if tuning_job_arn:
        describe["TuningJobArn"] = tuning_job_arn
    job = None
    try:
        job, algo, hp = prepare(request)
        describe["HyperParameters"] = job.hyperparameters
        _check_name_free(job)
        _write_describe(request, describe)  # InProgress until it ends (a killed job is left so)
        _enter(describe, "Downloading", "Downloading input data")
        echo(f"Training job {job.name}: {algo.name}, {job.instance_count} instance(s) of {job.instance_type}")
        echo(algo.input_format(job))  # which format each channel is read in, and what decided it
        init_state = algo.initial_state(job, hp)  # pretrained or incremental weights: before Ray or data
        ensure_ray()
        scaling = scaling_for(job.instance_type, job.instance_count, hp["mini_batch_size"])
        echo(scaling.plan)
        _write_describe(request, describe)
        _quiet_data_progress()
        prepared = algo.datasets(job, hp, shards=scaling.config.num_workers)  # checks index files
        for key, value in prepared.state.items():  # e.g. use_weighted_loss's per-class weights
            echo(f"From the training data: {key} = {_brief(value)}")
        describe["TrainingStartTime"] = time.time()
        _enter(describe, "Training", "Training image download completed. Training in progress.")
        _write_describe(request, describe)
        with StopSignal(stop_flag) as stop_flag:
            result = _fit(job, algo, hp, prepared, scaling, callbacks, init_state, stop_flag,
                          deadline=start + job.max_runtime_s, tag=tag)
        outcome = result.return_value or {}
        _enter(describe, "Uploading", "Uploading generated training model")
        _write_describe(request, describe)
        tarball_uri = _write_model(job, algo, hp, result)
        history = outcome.get("history") or []
        metrics = history[-1] if history else {}  # SageMaker reports the last epoch's values
        stopped = outcome.get("stopped")
        _write_curves(job, history)
        _write_preview(job, algo, hp, prepared.datasets["validation"], tarball_uri, echo)
        describe.update(
            TrainingJobStatus="Stopped" if stopped else "Completed",
            SecondaryStatus=stopped or "Completed",
            ModelArtifacts={"S3ModelArtifacts": tarball_uri},
            FinalMetricDataList=[
                {"MetricName": k, "Value": float(v), "Timestamp": time.time()}
                for k, v in sorted(metrics.items()) if ":" in k and isinstance(v, (int, float))
            ],
        )
        echo(f"Model written to {tarball_uri}")
    except ResourceInUse as exc:
        echo(str(exc))
        return {**describe, "TrainingJobStatus": "Failed", "FailureReason": str(exc)}
    except ClientError as exc:
        describe.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=str(exc)[:1024])
    except Exception as exc:  # noqa: BLE001 - any crash becomes a Failed job with its reason
        if tag:  # a tuning child's log stream is its tagged lines, so its traceback is tagged too
            echo(traceback.format_exc().rstrip())
        else:
            traceback.print_exc()
        describe.update(TrainingJobStatus="Failed", SecondaryStatus="Failed", FailureReason=failure_reason(exc))
    _enter(describe, describe["SecondaryStatus"], FINAL_MESSAGES.get(describe["SecondaryStatus"])
           or describe.get("FailureReason", ""), final=True)
    end = describe["LastModifiedTime"]
    describe.update(TrainingEndTime=end, TrainingTimeInSeconds=int(end - describe.get("TrainingStartTime", start)))
    describe["BillableTimeInSeconds"] = describe["TrainingTimeInSeconds"]
    if describe["TrainingJobStatus"] == "Failed":
        echo(describe["FailureReason"])
    if job is not None or _output_known(request):
        _write_describe(request, describe)
    return describe


def tagged(echo, tag: str):
    def say(text: str) -> None:
        for line in str(text).splitlines() or [""]:
            echo(tag + line)

    return say


FINAL_MESSAGES = {"Completed": "Training job completed", "Stopped": "Training job stopped",
                  "MaxRuntimeExceeded": "Training job stopped: MaxRuntimeInSeconds reached"}


def _enter(describe: dict[str, Any], status: str, message: str, final: bool = False) -> None:
    """SageMaker's SecondaryStatusTransitions: the previous step ends where the next begins;
    the SDK prints them while it waits, and DescribeTrainingJob returns them."""
    now = time.time()
    transitions = describe.setdefault("SecondaryStatusTransitions", [])
    if transitions and "EndTime" not in transitions[-1]:
        transitions[-1]["EndTime"] = now
    transitions.append({"Status": status, "StartTime": now, "StatusMessage": message[:1024]}
                       | ({"EndTime": now} if final else {}))
    describe.update(SecondaryStatus=status, LastModifiedTime=now)


class ResourceInUse(ClientError):
    """The job name belongs to a completed job, whose record must not be overwritten."""


def _quiet_data_progress() -> None:
    """Ray Data's per-operator bars redraw every epoch; in a log file (ray job logs,
    CI) they bury the metric lines, so keep them for terminals only."""
    import sys

    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = sys.stdout.isatty()


def make_stop_flag(name: str | None = None, scheduled: bool = False):
    """An actor the workers poll between batches; `set` asks the job to stop, keeping
    its best model. A named one can be reached from another process (`ray.get_actor`).
    `scheduled`: a tuning scheduler judges every epoch, and the workers wait for its
    verdict (`decide`) before the next epoch, so a seeded tuning job stops the same
    trials at the same epoch on any machine, however fast its epochs."""
    import ray

    @ray.remote(num_cpus=0)
    class Flag:
        def __init__(self, scheduled: bool):
            self.value, self.scheduled, self.decided = False, scheduled, 0

        def set(self):
            self.value = True

        def is_set(self):
            return self.value

        def decide(self, epochs: int, stop: bool):
            self.decided = max(self.decided, epochs)
            self.value = self.value or stop

        def verdict(self, epochs: int):
            """None while epoch `epochs` awaits the scheduler, else whether to stop."""
            if self.scheduled and self.decided < epochs and not self.value:
                return None
            return self.value

        def is_scheduled(self):
            return self.scheduled

    return (Flag.options(name=name) if name else Flag).remote(scheduled)


class StopSignal:
    """While training runs, SIGTERM (`ray job stop`, SageMaker's StopTrainingJob) sets the
    stop flag; the workers stop, keep the best model, and the job ends Stopped."""

    def __init__(self, flag=None):
        self.flag = flag

    def __enter__(self):
        import signal

        self.flag = self.flag or make_stop_flag()
        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, lambda *_: self.flag.set.remote())
        except ValueError:  # not the main thread (e.g. inside a Tune trial): no handler
            pass
        return self.flag

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _brief(value) -> str:
    if isinstance(value, (list, tuple)) and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.3g}" for v in value) + "]"
    return str(value)[:200]


def failure_reason(exc: BaseException) -> str:
    return client_error_text(exc) or f"AlgorithmError: {exc}"[:1024]


def _check_name_free(job: TrainingJob) -> None:
    """Job names are unique, as in SageMaker. A job that did not complete may be run
    again under its name: Ray Train then resumes from its last checkpoint."""
    uri = storage.join(output_prefix(job), "job.json")
    if storage.exists(uri):
        status = json.loads(storage.read_bytes(uri)).get("TrainingJobStatus")
        if status == "Completed":
            raise ResourceInUse(f"ResourceInUse: training job '{job.name}' already completed ({uri}); "
                                "choose a new TrainingJobName")


def _fit(job: TrainingJob, algo, hp, prepared, scaling, callbacks=(), init_state=None, stop_flag=None,
         deadline=None, tag=""):
    import ray
    from ray.train import FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    from raysight import ray_compat
    from raysight.train.ingest import ExactValidationDataConfig, flatten
    from raysight.train.loop import steps_per_epoch, train_loop_per_worker

    hosts = job.instance_count
    storage_path = job.checkpoint_uri or storage.join(job.output_path, job.name, "checkpoints")
    if not storage.is_remote(storage_path):
        storage_path = storage.path_of(storage_path)
    datasets = flatten(prepared.datasets)
    config = {
        "algorithm": algo.name,
        "dataset_names": sorted(datasets),
        "hp": hp,
        "state": prepared.state,  # derived from the data, for the criterion
        "steps_per_epoch": steps_per_epoch(hp, hosts),
        "worker_batch_size": scaling.worker_batch_size,
        "torch_threads": scaling.torch_threads,
        # A local shuffle buffer mixes records that arrive in file order (RecordIO).
        "shuffle_buffer": 8 * hp["mini_batch_size"],
        "shuffle_seed": job.channels["train"].shuffle_seed if "train" in job.channels else None,
        "init_state": None if init_state is None else ray.put(init_state),
        "stop_flag": stop_flag,
        "deadline": deadline,
        "log_tag": tag,
    }
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=ray_compat.torch_config(),  # on a local Ray: a rendezvous that opens no port
        scaling_config=scaling.config,
        datasets=datasets,
        dataset_config=ExactValidationDataConfig(ordered=["train"] if config["shuffle_seed"] is not None else []),
        run_config=RunConfig(
            name=job.name,
            storage_path=storage_path,
            checkpoint_config=checkpoint_config(hp),
            failure_config=FailureConfig(max_failures=3),
            callbacks=list(callbacks),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
    outcome = result.return_value or {}
    if outcome.get("client_error"):  # bad data met by the workers: no retry helps
        raise ClientError(outcome["client_error"].removeprefix("ClientError: "))
    return result


def checkpoint_config(hp):
    """Every epoch reports a checkpoint; Ray Train keeps the latest (a restarted worker group
    resumes from it) and the top keep_score ones: every checkpoint_frequency-th epoch and the
    newest best (loop.keep_score)."""
    from ray.train import CheckpointConfig

    from raysight.algorithms.base import setting

    frequency = setting(hp, "checkpoint_frequency")
    return CheckpointConfig(num_to_keep=(hp["epochs"] // frequency if frequency else 0) + 1,
                            checkpoint_score_attribute="keep_score")


def _write_model(job: TrainingJob, algo, hp, result) -> str:
    kept = list(result.best_checkpoints or [])
    if not kept and result.checkpoint is not None:
        kept = [(result.checkpoint, result.metrics)]
    if not kept:
        raise RuntimeError("training reported no checkpoint")
    epochs = {int(m["epoch"]): (c, m) for c, m in kept}
    bests = [e for e, (_, m) in epochs.items() if m.get("is_best")]
    serve_epoch = max(bests) if bests else max(epochs)  # stopped before any epoch ended: the last
    wanted = {serve_epoch} | {e for e, (_, m) in epochs.items() if m.get("is_frequency")}
    params = {}
    for epoch in sorted(wanted):
        with epochs[epoch][0].as_directory() as d:
            params[epoch] = artifacts.state_dict_bytes(os.path.join(d, "model.pt"))
    blob = artifacts.build_tarball(algo.name, algo.artifact_prefix, hp, params, serve_epoch,
                                   input_shape=algo.input_shape(hp),
                                   extra={"best_metric": {algo.objective: result.metrics.get("best")}})
    uri = storage.join(output_prefix(job), "model.tar.gz")
    storage.write_bytes(uri, blob)
    return uri


def _write_preview(job: TrainingJob, algo, hp, validation, tarball_uri: str, echo=print) -> None:
    """The algorithm's picture of the served model on a few validation samples
    (e.g. detections.png), beside job.json."""
    try:
        _, model, _ = algorithms.load_model(tarball_uri)
        picture = algo.preview(model, validation, hp)
        if picture:
            name, png = picture
            storage.write_bytes(storage.join(output_prefix(job), name), png)
    except Exception as exc:  # noqa: BLE001 - a missing picture must not fail a trained job
        echo(f"could not draw the preview: {exc}")


def _write_curves(job: TrainingJob, history: list[dict]) -> None:
    """metrics.json (one row per epoch) and training-curves.png beside job.json."""
    if not history:
        return
    storage.write_bytes(storage.join(output_prefix(job), "metrics.json"), json.dumps(history, indent=1).encode())
    try:
        import matplotlib.ticker

        plt = plots.pyplot()
        epochs = [h["epoch"] for h in history]
        # losses and scores live on different scales: one panel per kind of metric
        panels: dict[str, list[str]] = {}
        for name in sorted({k for h in history for k in h if ":" in k}):
            panels.setdefault(name.split(":", 1)[1], []).append(name)
        fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.5), dpi=100, squeeze=False)
        for ax, (kind, names) in zip(axes[0], panels.items()):
            for name in names:
                ax.plot(epochs, [h.get(name) for h in history], marker="o", label=name)
            ax.set_xlabel("epoch")
            ax.set_title(kind)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(job.name)
        fig.tight_layout()
        storage.write_bytes(storage.join(output_prefix(job), "training-curves.png"), plots.png(fig))
    except Exception as exc:  # noqa: BLE001 - a missing plot must not fail a trained job
        print(f"could not draw training curves: {exc}")


def _describe_base(request: dict[str, Any], start: float) -> dict[str, Any]:
    name = str(request.get("TrainingJobName", "")) if isinstance(request, dict) else ""
    request = request if isinstance(request, dict) else {}
    return {
        "TrainingJobName": name,
        "TrainingJobArn": arn("training-job", name),
        "TrainingJobStatus": "InProgress",
        "SecondaryStatus": "Starting",
        "AlgorithmSpecification": request.get("AlgorithmSpecification"),
        "HyperParameters": request.get("HyperParameters") or {},
        "InputDataConfig": request.get("InputDataConfig"),
        "OutputDataConfig": request.get("OutputDataConfig"),
        "ResourceConfig": request.get("ResourceConfig"),
        "StoppingCondition": request.get("StoppingCondition") or {"MaxRuntimeInSeconds": DEFAULT_MAX_RUNTIME},
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "CreationTime": start,
        "LastModifiedTime": start,
        "SecondaryStatusTransitions": [{"Status": "Starting", "StartTime": start,
                                        "StatusMessage": "Starting the training job"}],
        "FinalMetricDataList": [],
    }


def _output_known(request) -> bool:
    return isinstance(request, dict) and bool((request.get("OutputDataConfig") or {}).get("S3OutputPath")) \
        and bool(request.get("TrainingJobName"))


def _write_describe(request: dict[str, Any], describe: dict[str, Any]) -> None:
    uri = storage.join(request["OutputDataConfig"]["S3OutputPath"], request["TrainingJobName"], "output", "job.json")
    try:
        if storage.exists(uri) and json.loads(storage.read_bytes(uri)).get("TrainingJobStatus") == "Completed":
            return  # a completed job's record is kept whatever a later request under its name says
        storage.write_bytes(uri, json.dumps(describe, indent=2, default=str).encode())
    except Exception as exc:  # noqa: BLE001 - the job's own outcome matters more than its record
        print(f"could not write {uri}: {exc}")

