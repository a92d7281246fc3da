"""The endpoint under load (issue 14, section 6), in one run on this machine:

  - a model's bare forward on one request's image (decode, resize, forward, render), in this process;
  - `raysight serve`'s app with dynamic batching off (max_batch_size 1) and on (the default), each
    driven through POST /invocations at concurrency 1, 8 and 32 by client threads holding
    keep-alive connections (as boto3 and requests do), reporting requests/s, p50, p99, errors;
  - a long run (10,000 requests at concurrency 32 by default) on the default settings;
  - optionally `raysight transform` over N images against the endpoint at concurrency 8 (--transform N),
    a SIGKILL of the replica under load (--kill: failed requests, recovery seconds), and an empty
    Serve deployment on the same proxy (--floor: Ray Serve's own cost per request).

Usage: python benchmarks/serve.py [--algorithm image-classification|object-detection] [--requests 800]
       [--long 10000] [--transform 2000] [--kill] [--floor]
The model is randomly initialised (speed does not depend on the weights): the digits ResNet-20
(3x28x28, 10 classes), or SSD on the shapes at width 0.125 (image_shape 300).
"""

import argparse
import http.client
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def make_model(algorithm: str, path: str) -> str:
    import torch

    from raysight import algorithms, artifacts
    from raysight.hyperparams import parse_hyperparameters

    algo = algorithms.get(algorithm)
    if algorithm == "image-classification":
        raw = {"num_classes": "10", "num_training_samples": "1437", "num_layers": "20", "image_shape": "3,28,28"}
    else:
        raw = {"num_classes": "3", "num_training_samples": "400", "base_network": "resnet-50",
               "image_shape": "300", "raysight_width_multiplier": "0.125", "use_pretrained_model": "0"}
    hp = parse_hyperparameters(algo.hyperparameters, raw)
    torch.manual_seed(0)
    model = algo.build_model(hp)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    with open(path, "wb") as f:
        f.write(artifacts.build_tarball(algo.name, algo.artifact_prefix, hp, {0: buf.getvalue()}, 0,
                                        algo.input_shape(hp)))
    return path


def sample_images(algorithm: str, n: int) -> list[bytes]:
    """Real request bodies: the digits' PNGs, or the shapes' JPEGs."""
    import numpy as np
    from PIL import Image

    out = []
    if algorithm == "image-classification":
        from sklearn.datasets import load_digits

        digits = load_digits().images
        for i in range(n):
            pixels = (digits[i % len(digits)] * 255 / 16).astype(np.uint8)
            buf = io.BytesIO()
            Image.fromarray(pixels).resize((28, 28)).convert("RGB").save(buf, format="PNG")
            out.append(buf.getvalue())
    else:
        from raysight.sample_data import shapes

        rng = np.random.default_rng(0)
        for _ in range(n):
            image, _ = shapes.make_image(rng, 128)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            out.append(buf.getvalue())
    return out


def content_type(algorithm: str) -> str:
    return "image/png" if algorithm == "image-classification" else "image/jpeg"


def drive(port: int, bodies: list[bytes], ctype: str, concurrency: int, requests: int, events=None) -> dict:
    """`requests` POSTs from `concurrency` threads, each on its own keep-alive connection.
    `events`: a list that gets (finish time, ok) per request."""
    latencies, errors, lock = [], [0], threading.Lock()
    counter = iter(range(requests))

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        mine = []
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            tic = time.perf_counter()
            try:
                conn.request("POST", "/invocations", body=bodies[i % len(bodies)], headers={"Content-Type": ctype})
                r = conn.getresponse()
                r.read()
                ok = r.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            mine.append(time.perf_counter() - tic)
            if events is not None:
                events.append((time.perf_counter(), ok))
            if not ok:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)

    tic = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - tic
    latencies.sort()
    return {"concurrency": concurrency, "requests": requests, "rps": requests / seconds,
            "p50_ms": 1000 * latencies[len(latencies) // 2], "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
            "errors": errors[0]}


def bare_forward_ms(model: str, bodies: list[bytes], ctype: str, repeats: int = 200) -> float:
    """Decode + resize + forward + render of one image, in this process, on one thread (a replica's)."""
    import torch

    from raysight.serve.model import ModelRunner

    torch.set_num_threads(1)
    runner = ModelRunner(model)
    times = []
    for i in range(repeats):
        tic = time.perf_counter()
        [result] = runner.predict([runner.prepare(bodies[i % len(bodies)], ctype)])
        runner.render(result, runner.accepts[0])
        times.append(time.perf_counter() - tic)
    return 1000 * statistics.median(times)


CPUS = [1.0]  # --cpus-per-replica


def serve_floor(bodies, ctype, requests: int) -> list[dict]:
    """The same proxy, client and body with a FastAPI deployment that answers `[1]` without looking
    at the image: what Ray Serve itself costs per request on this machine."""
    from fastapi import FastAPI, Request
    from ray import serve
    from starlette.responses import Response

    api = FastAPI()

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
    @serve.ingress(api)
    class Empty:
        @api.post("/invocations")
        async def invocations(self, request: Request):
            await request.body()
            return Response(b"[1]", media_type="application/json")

    serve.start(http_options={"host": "127.0.0.1", "port": 8097})
    serve.run(Empty.bind(), name="floor", route_prefix="/")
    drive(8097, bodies, ctype, 8, 200)
    rows = [{"floor": True, **drive(8097, bodies, ctype, c, requests)} for c in (1, 8, 32)]
    serve.shutdown()
    return rows


def kill_replica_under_load(port: int, bodies, ctype, requests: int = 3000) -> dict:
    """SIGKILL the replica's process mid-run at concurrency 8: the failed requests, and the
    seconds from the kill to the last failure (Serve starts a new replica)."""
    import signal
    import subprocess

    events: list = []
    killed = []

    def killer():
        time.sleep(3)
        pids = subprocess.run(["pgrep", "-f", "ServeReplica"], capture_output=True, text=True).stdout.split()
        killed.append(time.perf_counter())
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)

    t = threading.Thread(target=killer)
    t.start()
    result = drive(port, bodies, ctype, 8, requests, events)
    t.join()
    failures = [at for at, ok in events if not ok]
    result["recovery_s"] = (max(failures) - killed[0]) if failures else 0.0
    return result


def serve_runs(model: str, bodies, ctype, batch_size: int, concurrencies, requests: int, long: int = 0,
               kill: bool = False) -> list[dict]:
    from ray import serve

    from raysight.serve import app
    from raysight.serve.options import ServeOptions

    port = 8097
    ready = app.run(model, port=port, options=ServeOptions(max_batch_size=batch_size, cpus_per_replica=CPUS[0]))
    assert not ready["error"], ready
    drive(port, bodies, ctype, 8, 200)  # warm-up
    rows = [{"max_batch_size": batch_size, **drive(port, bodies, ctype, c, requests)} for c in concurrencies]
    if long:
        rows.append({"max_batch_size": batch_size, "long": True, **drive(port, bodies, ctype, 32, long)})
    if kill:
        rows.append({"max_batch_size": batch_size, "replica_killed": True,
                     **kill_replica_under_load(port, bodies, ctype)})
    serve.shutdown()
    return rows


def transform_vs_endpoint(model: str, algorithm: str, n: int, tmp: str) -> dict:
    """images/s of `raysight transform` over n images (2 predictors, as 2 cores allow) against
    the endpoint driven at concurrency 8 over the same images."""
    from ray import serve

    from raysight.serve import app
    from raysight.transform import job

    bodies, ctype = sample_images(algorithm, n), content_type(algorithm)
    folder = os.path.join(tmp, "images")
    os.makedirs(folder, exist_ok=True)
    suffix = ".png" if ctype == "image/png" else ".jpg"
    for i, body in enumerate(bodies):
        with open(os.path.join(folder, f"{i:05d}{suffix}"), "wb") as f:
            f.write(body)
    request = {"TransformJobName": "bench", "ModelName": "bench",
               "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": folder}},
                                  "ContentType": ctype},
               "TransformOutput": {"S3OutputPath": os.path.join(tmp, "out"), "Accept": "application/json"},
               "MaxConcurrentTransforms": 2, "BatchStrategy": "MultiRecord"}
    tic = time.perf_counter()
    record = job.run(request, model, echo=lambda *_: None)
    transform_s = time.perf_counter() - tic
    assert record["TransformJobStatus"] == "Completed", record
    app.run(model, port=8097)
    drive(8097, bodies, ctype, 8, 200)
    endpoint = drive(8097, bodies, ctype, 8, n)
    serve.shutdown()
    return {"images": n, "transform_images_per_s": n / transform_s, "endpoint_c8_images_per_s": endpoint["rps"],
            "ratio": n / transform_s / endpoint["rps"], "transform_s_including_start": transform_s}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--algorithm", default="image-classification")
    parser.add_argument("--requests", type=int, default=800, help="requests per concurrency level")
    parser.add_argument("--long", type=int, default=10000, help="requests of the long run at concurrency 32")
    parser.add_argument("--transform", type=int, default=0, help="images for the transform comparison (0 = skip)")
    parser.add_argument("--kill", action="store_true", help="also SIGKILL the replica under load")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0)
    parser.add_argument("--floor", action="store_true", help="also time an empty Serve deployment")
    parser.add_argument("--concurrency", default="1,8,32", help="levels, comma-separated")
    args = parser.parse_args()
    CPUS[0] = args.cpus_per_replica

    import ray

    from raysight.cluster import ensure_ray

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    ensure_ray()
    tmp = tempfile.mkdtemp()
    model = make_model(args.algorithm, os.path.join(tmp, "model.tar.gz"))
    bodies, ctype = sample_images(args.algorithm, 64), content_type(args.algorithm)
    forward = bare_forward_ms(model, bodies, ctype)
    print(f"bare forward (decode+resize+forward+render, 1 thread): {forward:.2f} ms", flush=True)
    from raysight.serve.options import ServeOptions

    results = {"algorithm": args.algorithm, "bare_forward_ms": forward}
    if args.floor:
        for row in serve_floor(bodies, ctype, args.requests):
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    on = ServeOptions(gpus_per_replica=1).batch_size()  # what GPU replicas batch by default
    for batch in (1, on):
        rows = serve_runs(model, bodies, ctype, batch, tuple(int(c) for c in args.concurrency.split(",")), args.requests,
                          long=args.long if batch > 1 else 0, kill=args.kill and batch > 1)
        for row in rows:
            print(json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        results[f"batch{batch}"] = rows
    off, on = results["batch1"], results[f"batch{on}"]
    if args.concurrency != "1,8,32":
        ray.shutdown()
        return
    by_c = {r["concurrency"]: r for r in on if not r.get("long")}
    off_c = {r["concurrency"]: r for r in off}
    print(f"batching on/off throughput: c1 {by_c[1]['rps'] / off_c[1]['rps']:.2f}x, "
          f"c8 {by_c[8]['rps'] / off_c[8]['rps']:.2f}x, c32 {by_c[32]['rps'] / off_c[32]['rps']:.2f}x "
          f"(target c32 >= 2x)")
    print(f"p50 at c1: on {by_c[1]['p50_ms']:.1f} ms, off {off_c[1]['p50_ms']:.1f} ms (target on <= off + 2 ms); "
          f"bare forward {forward:.1f} ms (target p50 <= forward + 5 ms)")
    print(f"no collapse: c32 {by_c[32]['rps']:.0f} req/s vs c8 {by_c[8]['rps']:.0f} req/s; c32 p99/p50 "
          f"{by_c[32]['p99_ms'] / by_c[32]['p50_ms']:.2f} (target <= 4)")
    if args.transform:
        results["transform"] = transform_vs_endpoint(model, args.algorithm, args.transform, tmp)
        print(json.dumps(results["transform"]), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
