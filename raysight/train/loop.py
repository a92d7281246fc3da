"""The per-worker training loop that Ray Train runs on every worker.

Stages per epoch: (1) train on this worker's shard, (2) validate on this
worker's disjoint share of the validation set, (3) reduce metrics across
workers, log SageMaker metric lines, report to Ray Train with a checkpoint
when the epoch is worth keeping, (4) apply the early-stopping rule.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import tempfile
import time
from typing import Any

import torch

from raysight import algorithms, workarounds
from raysight import collectives as dist
from raysight.algorithms.base import setting
from raysight.train.ingest import shard_name
from raysight.train.optim import build_optimizer, lr_multiplier

def train_loop_per_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    import ray.train
    import ray.train.torch

    workarounds.install()  # this worker executes its datasets (also done by cluster.setup_worker)
    algo = algorithms.get(config["algorithm"])
    hp = config["hp"]
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    if config.get("torch_threads"):
        torch.set_num_threads(config["torch_threads"])
    log = metric_logger(config.get("log_tag", "")) if rank == 0 else (lambda *a, **k: None)
    log(f"Worker {rank}: {torch.get_num_threads()} torch threads, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")

    # -- model, optimizer, schedule -------------------------------------------------
    if config.get("shuffle_seed") is not None:  # ShuffleConfig.Seed seeds the whole job: initial
        torch.manual_seed(config["shuffle_seed"])  # weights here, order and augmentation in the data
    model = algo.build_model(hp)
    state = _restore(model, log)
    if state is None and config.get("init_state") is not None:  # pretrained or incremental
        import ray

        model.load_state_dict(ray.get(config["init_state"]))
    model = ray.train.torch.prepare_model(model)
    net = model.module if hasattr(model, "module") else model  # unwrapped: no DDP collectives
    device = ray.train.torch.get_device()
    criterion = algo.criterion(hp, config.get("state") or {}, net)
    optimizer = build_optimizer(hp, [p for p in model.parameters() if p.requires_grad],
                                algo.weight_decay_optimizers)
    steps_per_epoch = config["steps_per_epoch"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(hp, step, steps_per_epoch)
    )
    if state:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    start_epoch = state["epoch"] + 1 if state else 0
    progress = Progress(hp, state)
    best, since_best = progress.best, progress.since_best
    history = state.get("history", []) if state else []  # per-epoch metrics, for job.json and curves
    amp = setting(hp, "precision_dtype") == "float16" and device.type == "cuda"
    if setting(hp, "precision_dtype") == "float16" and not amp:
        log("precision_dtype=float16 needs a GPU; training in float32 on CPU", flush=True)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    # Ray Train hands out a dataset only once every rank has asked for it, so every rank
    # asks for every train share, in the same order, and keeps its own.
    names = config["dataset_names"]
    shares = {n: ray.train.get_dataset_shard(n) for n in names if n.split("#")[0] == "train"}
    train_shard = shares[shard_name("train", rank, names)]
    val_shard = ray.train.get_dataset_shard("validation")
    batch_size = config["worker_batch_size"]
    objective = algo.objective

    failures = DataFailures()
    stop = StopCheck(config.get("deadline"), config.get("stop_flag"))
    stopped = None
    for epoch in range(start_epoch, hp["epochs"]):
        tic = time.time()
        # 1. train
        model.train()
        meter = algo.meter(hp, "train", net)
        window, window_start = 0, time.time()
        seed = config.get("shuffle_seed")
        batches = train_shard.iter_torch_batches(
            batch_size=batch_size, device=device, local_shuffle_buffer_size=config.get("shuffle_buffer"),
            local_shuffle_seed=None if seed is None else seed + epoch)  # reproducible, new each epoch
        waited = [0.0]  # seconds this epoch spent waiting for the next batch (train + validation)
        for b, batch in enumerate(synced(batches, failures, stop, waited)):
            batch = algo.prepare_batch(batch, hp, training=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                outputs = model(batch["image"])
                loss, terms = criterion(outputs, batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            meter.update(outputs.detach().float(), batch, terms)
            window += len(batch["label"])
            if (b + 1) % algo.log_every_batches == 0:
                speed = window * ctx.get_world_size() / max(time.time() - window_start, 1e-9)
                for line in algo.log_batch(epoch, b + 1, speed, meter.local()):
                    log(line)
                window, window_start = 0, time.time()
        if failures.agreed():
            break
        if stop.agreed:  # keep the best model; with none yet, keep this one
            stopped = dist.gather(stop.reason)[0] or "Stopped"
            log(f"Stopping ({stopped}) in epoch {epoch}", flush=True)
            if best is None:
                state = {"epoch": epoch, "best": best, "since_best": since_best, "history": history,
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
                _report({"epoch": epoch, "best": None, "is_best": False, "is_frequency": False,
                         "keep_score": keep_score(epoch, False, False)}, net, state, algo, rank == 0)
            break
        metrics = meter.compute()

        # 2. validate (unwrapped model: no DDP collectives, shares may differ in size)
        validation_start = time.time()
        model.eval()
        meter = algo.meter(hp, "validation", net)
        with torch.inference_mode(), failures.catch():
            for batch in timed(val_shard.iter_torch_batches(batch_size=batch_size, device=device), waited):
                batch = algo.prepare_batch(batch, hp, training=False)
                meter.update(net(batch["image"]).float(), batch)
        if failures.agreed():
            break
        metrics.update(meter.compute())
        end = time.time()
        seconds = end - tic
        timings = {"seconds": seconds, "validation_seconds": end - validation_start, "data_wait_seconds": waited[0]}

        # 3. log, checkpoint, report
        for line in algo.log_epoch(epoch, metrics, seconds, hp):
            log(line, flush=True)
        log(f"Epoch[{epoch}] of which validation={timings['validation_seconds']:.3f}s, "
            f"waiting for data={timings['data_wait_seconds']:.3f}s", flush=True)
        improved, since_best = progress.update(metrics[objective])
        best = progress.best
        if improved:
            log(f"Storing the best model with {objective.replace(':', ' ')}: {best:.6f}", flush=True)
        frequency = _frequency_epoch(hp, epoch)
        metrics.update(epoch=epoch, best=best, is_best=improved, is_frequency=frequency,
                       keep_score=keep_score(epoch, improved, frequency))
        history.append({k: v for k, v in metrics.items() if ":" in k} | {"epoch": epoch, **timings})
        state = {"epoch": epoch, "best": best, "since_best": since_best, "improved": improved,
                 "history": history, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
        # every epoch checkpoints (Ray Train keeps the latest, for a restart) ...
        _report(metrics, net, state, algo, rank == 0)
        if epoch + 1 < hp["epochs"]:
            stop.await_verdict(epoch + 1)  # a tuning scheduler's verdict (a no-op otherwise)

        # 4. early stopping (every worker sees the same reduced metrics, so all stop together)
        if progress.should_stop(epoch):
            log(f"Early stopping at epoch {epoch}: no {objective} improvement for {since_best} epochs", flush=True)
            break

    # What the driver needs beyond checkpoints: Ray Train returns rank 0's value.
    return {"history": history, "client_error": failures.message, "stopped": stopped}


class Progress:
    """The best objective so far and SageMaker's early-stopping rule: after at least
    early_stopping_min_epochs, stop once early_stopping_patience epochs in a row fail
    to improve by (score - best) / best >= early_stopping_tolerance."""

    def __init__(self, hp: dict[str, Any], state: dict | None = None):
        self.hp = hp
        self.best = state["best"] if state else None
        self.since_best = state["since_best"] if state else 0

    def update(self, score: float) -> tuple[bool, int]:
        """(new best?, epochs in a row without enough improvement)."""
        best = self.best
        progressed = best is None or score - best >= self.hp["early_stopping_tolerance"] * best
        self.since_best = 0 if progressed else self.since_best + 1
        improved = best is None or score > best
        if improved:
            self.best = score
        return improved, self.since_best

    def should_stop(self, epoch: int) -> bool:
        return bool(self.hp["early_stopping"]) and epoch + 1 >= self.hp["early_stopping_min_epochs"] \
            and self.since_best >= self.hp["early_stopping_patience"]


class DataFailures:
    """Bad data (a ClientError raised in a Ray Data task) must end the job on every
    worker at once, without Ray Train's restarts: a restart reads the same bad record.
    Workers agree through a tiny all-reduce, then all report the message and return."""

    def __init__(self):
        self.message: str | None = None

    def record(self, exc: BaseException) -> None:
        from raysight.errors import client_error_text

        self.message = client_error_text(exc)
        if self.message is None:
            raise exc

    @contextlib.contextmanager
    def catch(self):
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is bad data
            self.record(exc)

    def agreed(self) -> bool:
        """True on every worker when any worker met bad data; every worker then holds
        the first message, which the loop returns to the driver."""
        if not dist.all_max(1 if self.message else 0):
            return False
        self.message = next(m for m in dist.gather(self.message) if m)
        return True


END, STOP, BAD_DATA = 1, 2, 3


def timed(batches, waited: list[float]):
    """Yield batches, adding the seconds spent waiting for each to waited[0]."""
    it = iter(batches)
    while True:
        tic = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        finally:
            waited[0] += time.perf_counter() - tic
        yield batch


def synced(batches, failures: DataFailures, stop: "StopCheck", waited: list[float]):
    """Yield batches while every worker still has one, none met bad data and no stop
    was asked for, so DDP workers never wait on a peer that has left the loop."""
    it = timed(batches, waited)
    while True:
        status = 0
        try:
            batch = next(it)
        except StopIteration:
            status = END
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is bad data
            failures.record(exc)
            status = BAD_DATA
        if not status and stop.requested():
            status = STOP
        agreed = dist.all_max(status)  # a peer's bad-data message is gathered later, in agreed()
        if agreed:
            stop.agreed = stop.agreed or agreed == STOP
            return
        yield batch


class StopCheck:
    """MaxRuntimeInSeconds (a deadline) and StopTrainingJob/SIGTERM (a flag actor the
    driver sets), polled at most every POLL_S seconds; and, in a tuning trial with a
    scheduler, the scheduler's verdict on each epoch, awaited before the next one."""

    POLL_S = 2.0
    VERDICT_WAIT_S = 120.0  # a Tune controller that never answers must not hold the job

    def __init__(self, deadline: float | None, flag):
        import ray

        self.deadline, self.flag = deadline, flag
        self.reason: str | None = None
        self.agreed = False
        self._next_poll = 0.0
        self.scheduled = flag is not None and ray.get(flag.is_scheduled.remote())

    def requested(self) -> bool:
        if self.reason:
            return True
        now = time.time()
        if self.deadline and now >= self.deadline:
            self.reason = "MaxRuntimeExceeded"
        elif self.flag is not None and now >= self._next_poll:
            import ray

            self._next_poll = now + self.POLL_S
            if ray.get(self.flag.is_set.remote()):
                self.reason = "Stopped"
        return self.reason is not None

    def await_verdict(self, epochs: int) -> None:
        """Block until the scheduler has judged the report of epoch `epochs` (1-based)."""
        if not self.scheduled:
            return
        import ray

        give_up = time.time() + self.VERDICT_WAIT_S
        while (verdict := ray.get(self.flag.verdict.remote(epochs))) is None and time.time() < give_up:
            time.sleep(0.05)
        if verdict:
            self.reason = "Stopped"


def metric_logger(tag: str = ""):
    """Lines to the worker's stdout, which Ray forwards to the driver and `ray job logs`.

    Ray Train routes print() into its own log files; SageMaker-style metric lines must
    reach the console so existing MetricDefinitions regexes keep matching."""
    logger = logging.getLogger("raysight.metrics")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False

    def log(line: str, flush: bool = True) -> None:
        logger.info(tag + line)

    return log


def keep_score(epoch: int, best: bool, frequency: bool) -> float:
    """... and CheckpointConfig keeps the top scores: checkpoint_frequency epochs first,
    then the newest best epoch; other epochs only until the next report."""
    if frequency:
        return 1e6 + epoch
    return float(epoch) if best else -1.0


def _frequency_epoch(hp, epoch: int) -> bool:
    every = setting(hp, "checkpoint_frequency")
    return bool(every) and (epoch + 1) % every == 0


def _report(metrics, net, state, algo, with_checkpoint: bool) -> None:
    import ray.train

    if not with_checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        torch.save(net.state_dict(), os.path.join(tmp, "model.pt"))
        torch.save(state, os.path.join(tmp, "state.pt"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _restore(model, log) -> dict | None:
    """Resume from the last reported checkpoint after a worker-group restart."""
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as d:
        model.load_state_dict(torch.load(os.path.join(d, "model.pt"), map_location="cpu", weights_only=True))
        state = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=True)
    log(f"Resuming from checkpoint of epoch {state['epoch']}")
    return state


def steps_per_epoch(hp: dict[str, Any], num_hosts: int) -> int:
    """SageMaker's epoch size: ceil(floor(num_training_samples / hosts) / mini_batch_size)."""
    return max(1, math.ceil((hp["num_training_samples"] // num_hosts) / hp["mini_batch_size"]))
