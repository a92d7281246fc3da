"""Batch transform on Ray Data: the input objects' keys → `map_batches` over an actor pool of
predictors (the endpoint's ModelRunner: same decode, resize, batched forward and rendering) →
one `<S3OutputPath>/<key relative to the input>.out` per object, written by the actor that
answered it. No HTTP round trip per object; the driver only counts and reports.

An object that fails (undecodable, over MaxPayloadInMB, not an image) gets no .out and does
not stop the others; the job then ends Failed, naming every failed key."""
from __future__ import annotations

import gzip
import json
import sys
import time
from typing import Any

import numpy as np

from raysight import storage
from raysight.errors import ClientError
from raysight.job_request import arn
from raysight.serve.codecs import EXECUTION_PARAMETERS, HTTPError
from raysight.transform.request import TransformJob, parse

FORWARD_BATCH = 16  # objects per forward pass with MultiRecord
PROGRESS_EVERY = 200  # objects between progress lines in logs


class Transformer:
    """One Ray Data actor: loads the model once, then answers batches of object keys."""

    def __init__(self, job: TransformJob):
        from raysight.serve.model import ModelRunner, assigned, use_cpus

        use_cpus(assigned("CPU") or 1)
        self.job, self.runner = job, ModelRunner(job.model)
        self.limit = job.max_payload_mb * 2**20

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from concurrent.futures import ThreadPoolExecutor

        keys = [str(k) for k in batch["key"]]
        with ThreadPoolExecutor(8) as pool:  # object reads are I/O: overlap them
            prepared = list(pool.map(self._prepare, keys))
        good = [i for i, p in enumerate(prepared) if not isinstance(p, str)]
        errors = [p if isinstance(p, str) else "" for p in prepared]
        step = FORWARD_BATCH if self.job.batch_strategy == "MultiRecord" else 1
        for start in range(0, len(good), step):
            chunk = good[start:start + step]
            for i, result in zip(chunk, self.runner.predict([prepared[i] for i in chunk])):
                body, _ = self.runner.render(result, self.job.accept)
                if self.job.assemble_with == "Line" and not body.endswith(b"\n"):
                    body += b"\n"
                storage.write_bytes(output_uri(self.job, keys[i]), body)
        return {"key": np.array(keys, dtype=object), "error": np.array(errors, dtype=object)}

    def _prepare(self, key: str):
        """(pixels, size) for one object, or the text of why it has no answer."""
        try:
            blob = storage.read_bytes(storage.join(self.job.input_uri, key) if key else self.job.input_uri)
            if self.job.compression == "Gzip":
                blob = gzip.decompress(blob)
            if len(blob) > self.limit:
                return f"{len(blob)} bytes exceeds MaxPayloadInMB={self.job.max_payload_mb}"
            # ContentType was checked to name images; the bytes say JPEG or PNG, as at an endpoint
            # sent application/x-image (so application/jpeg, image/x-png, ... read the same)
            return self.runner.prepare(blob, "application/x-image", where="object")
        except HTTPError as exc:
            return exc.message
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            return f"cannot read: {exc}"


def output_uri(job: TransformJob, key: str) -> str:
    """<S3OutputPath>/<key relative to the input prefix>.out (a single-object input: its name)."""
    name = key or job.input_uri.rstrip("/").rsplit("/", 1)[-1]
    return storage.join(job.output_uri, name + ".out")


def describe_base(request: dict[str, Any], start: float) -> dict[str, Any]:
    """A DescribeTransformJob-shaped record (botocore's model of the response is the schema)."""
    request = request if isinstance(request, dict) else {}
    name = str(request.get("TransformJobName", ""))
    record = {"TransformJobName": name, "TransformJobArn": arn("transform-job", name),
              "TransformJobStatus": "InProgress", "ModelName": request.get("ModelName") or name,
              "CreationTime": start}
    for key in ("MaxConcurrentTransforms", "MaxPayloadInMB", "BatchStrategy", "Environment", "TransformInput",
                "TransformOutput", "TransformResources", "DataProcessing", "ModelClientConfig"):
        if request.get(key) is not None:
            record[key] = request[key]
    return record


def run(request: dict[str, Any], model_uri: str | None, echo=print) -> dict[str, Any]:
    """Run one transform job to its end; return (and write) its DescribeTransformJob record."""
    start = time.time()
    describe = describe_base(request, start)
    job = None
    try:
        job = parse(request, model_uri, EXECUTION_PARAMETERS)
        describe.update(MaxConcurrentTransforms=job.concurrency, MaxPayloadInMB=job.max_payload_mb,
                        BatchStrategy=job.batch_strategy,
                        TransformResources={"InstanceType": job.instance_type, "InstanceCount": job.instance_count})
        _write(job, describe)
        from raysight.data import channel_files

        root, keys = channel_files(job.channel())
        job.input_uri = root
        if not keys:
            raise ClientError(f"TransformInput {job.input_uri} holds no objects")
        echo(f"Transform job {job.name}: {len(keys)} object(s) from {job.input_uri}, model {job.model}, "
             f"{job.concurrency} predictor(s)")
        describe["TransformStartTime"] = time.time()
        failed, stopped = _transform(job, keys, echo)
        if stopped:
            describe.update(TransformJobStatus="Stopped")
        elif failed:
            shown = "; ".join(f"{k or job.input_uri}: {e}" for k, e in failed[:10])
            more = f" (and {len(failed) - 10} more)" if len(failed) > 10 else ""
            describe.update(TransformJobStatus="Failed",
                            FailureReason=f"ClientError: {len(failed)} of {len(keys)} object(s) failed: {shown}{more}"[
                                :1024])
            for key, error in failed:
                echo(f"failed: {key or job.input_uri}: {error}")
        else:
            describe.update(TransformJobStatus="Completed")
        echo(f"{len(keys) - len(failed)} of {len(keys)} object(s) transformed into {job.output_uri}")
    except ClientError as exc:
        describe.update(TransformJobStatus="Failed", FailureReason=str(exc)[:1024])
    except Exception as exc:  # noqa: BLE001 - any crash becomes a Failed job with its reason
        import traceback

        from raysight.errors import client_error_text

        traceback.print_exc()
        describe.update(TransformJobStatus="Failed", FailureReason=client_error_text(exc) or f"{exc}"[:1024])
    describe["TransformEndTime"] = time.time()
    if describe["TransformJobStatus"] == "Failed":
        echo(describe["FailureReason"])
    if job is not None:
        _write(job, describe)
    return describe


def _transform(job: TransformJob, keys: list[str], echo) -> tuple[list[tuple[str, str]], bool]:
    import ray

    from raysight.cluster import ensure_ray

    ensure_ray()
    from ray.data import ActorPoolStrategy, DataContext

    DataContext.get_current().enable_progress_bars = False  # ours below, one line per N in logs
    gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    ds = ray.data.from_items([{"key": k} for k in keys], override_num_blocks=max(1, min(len(keys) // 64, 200)))
    batch = 64 if job.batch_strategy == "MultiRecord" else 1
    ds = ds.map_batches(Transformer, fn_constructor_args=(job,), batch_size=batch,
                        compute=ActorPoolStrategy(size=job.concurrency), num_cpus=0 if gpus else 1, num_gpus=gpus)
    failed, done, tic = [], 0, time.perf_counter()
    bar = _bar(len(keys))
    stop = _StopOnSigterm()
    with stop:
        for out in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for key, error in zip(out["key"], out["error"]):
                if error:
                    failed.append((str(key), str(error)))
            count = len(out["key"])
            done += count
            if bar is not None:
                bar.update(count)
            elif done // PROGRESS_EVERY != (done - count) // PROGRESS_EVERY or done == len(keys):
                echo(f"transformed {done}/{len(keys)} object(s), {done / (time.perf_counter() - tic):.1f}/s, "
                     f"{len(failed)} failed")
            if stop.requested:
                break
    if bar is not None:
        bar.close()
    return failed, stop.requested


class _StopOnSigterm:
    """SIGTERM (`ray job stop`, StopTransformJob) ends the job Stopped after the batch in hand."""

    requested = False

    def __enter__(self):
        import signal

        self.previous = None
        try:
            self.previous = signal.signal(signal.SIGTERM, lambda *_: setattr(self, "requested", True))
        except ValueError:  # not the main thread
            pass
        return self

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _bar(total: int):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="obj", desc="transform")


def _write(job: TransformJob, describe: dict[str, Any]) -> None:
    uri = storage.join(job.output_uri, "transform-job.json")
    try:
        storage.write_bytes(uri, json.dumps(describe, indent=2, default=str).encode())
    except Exception as exc:  # noqa: BLE001 - the job's own outcome matters more than its record
        print(f"could not write {uri}: {exc}")
