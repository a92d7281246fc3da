"""`raysight` command line: one entry point, one subcommand per user task."""
from __future__ import annotations

import argparse
import json
import os
import sys

EPILOG = "Docs: README.md (quick start) and ARCHITECTURE.md (how the pieces fit)."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="raysight",
        description="SageMaker's built-in Image Classification and Object Detection, on Ray.",
        epilog=EPILOG,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="run a CreateTrainingJob request",
                       description="Run a SageMaker CreateTrainingJob request (JSON file or URI) on Ray: local Ray, "
                                   "or the cluster in RAY_ADDRESS. Writes <S3OutputPath>/<TrainingJobName>/output/"
                                   "{model.tar.gz,job.json}. Exit 0 when the job completes.",
                       epilog="environment: AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and the AWS credential chain "
                              "(S3, MinIO); RAYSIGHT_CACHE_DIR (File-mode copies); RAYSIGHT_PRETRAINED_WEIGHTS "
                              "(ImageNet weights file or folder); RAYSIGHT_DECODE_CACHE_FRACTION (share of the "
                              "object store for channels decoded once before training, default 0.25, 0 = off); "
                              "RAYSIGHT_ALGORITHMS (your own algorithm modules, comma-separated; README 'Your "
                              "own algorithm'). "
                              "Example (after make demo exported the digits; more in jobs/README.md): "
                              "raysight train jobs/image-classification-digits.json")
    p.add_argument("request", help="CreateTrainingJob JSON (path, file:// or s3:// URI)")
    p.add_argument("--validate-only", action="store_true", help="check the request and stop, training nothing")

    p = sub.add_parser("serve", help="host a model.tar.gz: SageMaker's hosting contract and InvokeEndpoint",
                       description="Serve a raysight model.tar.gz (path or s3:// URI) with Ray Serve: GET /ping, "
                                   "POST /invocations, GET /execution-parameters, and boto3's sagemaker-runtime "
                                   "invoke_endpoint at POST /endpoints/NAME/invocations. Dynamic batching, "
                                   "replicas or autoscaling, GPU replicas, multi-model endpoints. Ctrl-C or SIGTERM "
                                   "answers what is in flight, then stops. Models of a plugin algorithm need "
                                   "RAYSIGHT_ALGORITHMS set as for training.",
                       epilog="Each flag is also a setting of serve_configs/*.yaml (args:, with _ for -).")
    p.add_argument("model", help="model.tar.gz path or URI; with --multi-model a folder or prefix of them")
    p.add_argument("--port", type=int, default=8080, help="HTTP port (default 8080, as SageMaker)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0 to accept remote clients)")
    add_serve_options(p)
    p = sub.add_parser("transform", help="run a CreateTransformJob request (batch transform on Ray Data)",
                       description="Run a SageMaker CreateTransformJob request: every object under TransformInput "
                                   "(S3Prefix or ManifestFile, one image each) is answered as the endpoint answers "
                                   "it, into <S3OutputPath>/<key>.out, plus <S3OutputPath>/transform-job.json. "
                                   "Exit 0 when every object is answered, 1 when the job fails, 3 when stopped.",
                       epilog="Example: raysight transform jobs/transform-digits.json --model "
                              "data/output/digits-resnet20/output/model.tar.gz")
    p.add_argument("request", help="CreateTransformJob JSON (path, file:// or s3:// URI)")
    p.add_argument("--model", required=True, help="the model.tar.gz (path or URI) that ModelName stands for")

    p = sub.add_parser("tune", help="run a CreateHyperParameterTuningJob request with Ray Tune",
                       description="Run a SageMaker CreateHyperParameterTuningJob request: each trial is a real "
                                   "training job. Strategies Bayesian, Random, Hyperband, Grid; Auto early "
                                   "stopping, warm start, completion criteria. SIGTERM stops it (exit 1); running "
                                   "the same request again resumes it. Writes <S3OutputPath>/<TuningJobName>/"
                                   "{tuning-job.json,training-jobs.json,tuning-results.png,best/model.tar.gz}. "
                                   "Exit 0 Completed, 1 Failed or Stopped, 2 invalid request.")
    p.add_argument("request", help="CreateHyperParameterTuningJob JSON (path or URI)")

    p = sub.add_parser("api", help="SageMaker's service API (boto3, the SageMaker SDK) over this Ray cluster",
                       description="Serve SageMaker's control-plane API (AWS JSON 1.1, SigV4) so code written for "
                                   "SageMaker runs here by changing only its endpoint: AWS_ENDPOINT_URL_SAGEMAKER="
                                   "http://HOST:PORT. Training jobs run as Ray Jobs (the same code as raysight "
                                   "train) on RAY_ADDRESS, or on a local Ray started detached and recorded under "
                                   "--state; jobs outlive this process. 'raysight api stop' ends that local Ray.",
                       epilog="Serve over TLS through a reverse proxy (nginx, Caddy); the signature covers the "
                              "Host header, so the proxy must pass it unchanged. README 'Use your SageMaker "
                              "code unchanged'.")
    p.add_argument("action", nargs="?", choices=("stop",), help="stop: end the local Ray cluster of --state "
                                                                 "and every job on it")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="HTTP port (default 8090)")
    p.add_argument("--state", default=None, help="folder of the API's SQLite records and local-cluster "
                                                 "address (default ~/.raysight/api)")
    p.add_argument("--credentials", default=None, help="AWS shared-credentials file whose key pairs may call "
                                                       "(default: the file boto3 reads, "
                                                       "AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials)")
    p.add_argument("--serve-port", type=int, default=8000, help="port of Ray Serve's HTTP proxy, where endpoints "
                                                                "run, if this server starts Serve (default 8000, "
                                                                "Serve's own); InvokeEndpoint reaches them through "
                                                                "this server")
    p.add_argument("--replica-cpus", type=float, default=1.0, help="CPUs per endpoint replica (one per instance "
                                                                   "of InitialInstanceCount; default 1)")
    p.add_argument("--max-running-jobs", type=int, default=0, help="at most N training jobs and N tuning jobs "
                                                                  "in progress at once; one more gets "
                                                                  "ResourceLimitExceeded (default 0: no limit)")
    p.add_argument("--local-root", action="append", default=[], metavar="DIR",
                   help="a local folder that requests may read and write (repeatable); default none: only s3:// "
                        "locations are accepted, as on SageMaker. Checked after resolving .. and symlinks, in "
                        "every operation and again inside every job")

    p = sub.add_parser("digits", help="export scikit-learn's digits as images + .lst and a training request",
                       description="Write the bundled handwritten digits (1,797 real images) as PNG files and "
                                   ".lst lists under ROOT, plus ROOT/request.json for `raysight train`.")
    p.add_argument("root")
    p.add_argument("--output", help="S3OutputPath for the request (default ROOT/output)")
    p.add_argument("--limit", type=int, help="keep only N images per split")

    p = sub.add_parser("shapes", help="write the procedural object-detection data set and training requests",
                       description="Draw circles, squares and triangles on noisy backgrounds with exact boxes and "
                                   "write them under ROOT as images + JSON annotations, augmented manifests and "
                                   "RecordIO, plus ROOT/request-{json,manifest,recordio}.json for `raysight train`.")
    p.add_argument("root")
    p.add_argument("--train", type=int, default=400, help="training images (default 400)")
    p.add_argument("--validation", type=int, default=100, help="validation images (default 100)")
    p.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", help="S3OutputPath for the requests (default ROOT/output)")

    p = sub.add_parser("im2rec", help="pack images into MXNet RecordIO (.rec + .idx), as MXNet's im2rec.py",
                       description="MXNet tools/im2rec.py with the same arguments: --list writes PREFIX.lst from "
                                   "the images under ROOT; without it every PREFIX*.lst becomes .rec + .idx.")
    from raysight.im2rec import add_arguments

    add_arguments(p)

    p = sub.add_parser("inspect", help="summarize a channel (format, records, labels, sizes, problems)",
                       description="Read a channel (.rec files, or a .lst with its images) and summarize it; "
                                   "--records prints one JSON line per record with the sha256 of its image bytes.")
    p.add_argument("channel", help="channel URI or path (s3://, file:// or local)")
    p.add_argument("--root", help="image root for a .lst channel (default: the folder of the .lst)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--records", action="store_true", help="one JSON line per record")

    p = sub.add_parser("hyperparameters", help="list an algorithm's hyperparameters",
                       description="Print the hyperparameter table (names, ranges, defaults) of an algorithm.")
    p.add_argument("algorithm", nargs="?", default="image-classification")

    p = sub.add_parser("demo", help="the main job end to end on the bundled digits",
                       description="Export the digits, train a ResNet-20 on a local Ray, serve it, classify the "
                                   "validation images over HTTP and print the accuracy.")
    p.add_argument("--workdir", default="demo-output", help="where data, model and job.json go")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--epochs", help="override the epochs hyperparameter")

    args = parser.parse_args(argv)
    return COMMANDS[args.command](args)


def cmd_train(args) -> int:
    from raysight.errors import ClientError
    from raysight.job_request import load_request
    from raysight.train import driver

    request = None
    try:
        request = load_request(args.request)
        job, algo, _ = driver.prepare(request)  # no torch, no Ray: a bad request is refused at once
    except ClientError as exc:
        if request is not None and not args.validate_only:
            driver.run(request, echo=lambda *_: None)  # records the Failed job.json, as a job that ran
        print(exc, file=sys.stderr)
        return 2
    if args.validate_only:
        print(f"OK: {job.name} ({algo.name}) is valid")
        return 0
    record = driver.run(request)
    print(json.dumps({k: record.get(k) for k in ("TrainingJobName", "TrainingJobStatus", "FailureReason",
                                                  "FinalMetricDataList", "ModelArtifacts")}, indent=2))
    return {"Completed": 0, "Stopped": 3}.get(record["TrainingJobStatus"], 1)


def add_serve_options(p) -> None:
    from raysight.serve.options import ServeOptions

    d = ServeOptions()
    p.add_argument("--name", default=d.name, help=f"endpoint name for /endpoints/NAME/invocations (default {d.name})")
    p.add_argument("--variant", default=d.variant, help=f"production variant name answered (default {d.variant})")
    p.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                   help="dynamic batching: most requests per forward pass (default 0: 16 on GPU replicas, off on "
                        "CPU ones, as measured; 1 = off)")
    p.add_argument("--batch-wait-timeout-ms", type=float, default=d.batch_wait_timeout_ms,
                   help=f"how long a batch waits to fill (default {d.batch_wait_timeout_ms:g} ms)")
    p.add_argument("--timeout-s", type=float, default=d.timeout_s,
                   help=f"longest answer before a 504 (default {d.timeout_s:g} s, as SageMaker)")
    p.add_argument("--replicas", type=int, default=d.replicas, help="fixed replica count (default 1)")
    p.add_argument("--min-replicas", type=int, help="autoscaling lower bound (with --max-replicas)")
    p.add_argument("--max-replicas", type=int, help="autoscaling upper bound (with --min-replicas)")
    p.add_argument("--target-ongoing-requests", type=float, default=d.target_ongoing_requests,
                   help=f"autoscaling: in-flight requests per replica aimed at (default {d.target_ongoing_requests:g})")
    p.add_argument("--cpus-per-replica", type=float, default=d.cpus_per_replica,
                   help=f"CPUs per replica, also its torch threads (default {d.cpus_per_replica:g})")
    p.add_argument("--gpus-per-replica", type=float, default=d.gpus_per_replica,
                   help="GPUs per replica, fractional allowed; GPU replicas run in half precision (default 0)")
    p.add_argument("--multi-model", action="store_true",
                   help="serve every *.tar.gz under MODEL, picked by X-Amzn-SageMaker-Target-Model")
    p.add_argument("--max-models-per-replica", type=int, default=d.max_models_per_replica,
                   help=f"multi-model: loaded models kept per replica, least recently used dropped "
                        f"(default {d.max_models_per_replica})")


def serve_options(args):
    from dataclasses import fields

    from raysight.serve.options import ServeOptions

    opts = ServeOptions(**{f.name: getattr(args, f.name) for f in fields(ServeOptions)})
    opts.check()
    return opts


def cmd_serve(args) -> int:
    import signal
    import threading

    from ray import serve

    from raysight import storage
    from raysight.cluster import ensure_ray
    from raysight.errors import ClientError
    from raysight.serve import app

    try:
        opts = serve_options(args)
        if not storage.exists(args.model):  # before any cluster time is spent
            raise ClientError(f"model '{args.model}' does not exist")
    except ClientError as exc:
        print(f"ClientError: {exc}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    ensure_ray()
    # After ray.init, which installs handlers of its own, and before the deployment starts,
    # so that a stop signal (SageMaker's and `ray job stop`'s SIGTERM, Ctrl-C) that arrives
    # while it is coming up still ends in a clean Serve shutdown, leaving no app behind.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    ready = app.run(args.model, host=args.host, port=args.port, options=opts)
    if ready["error"]:
        print(f"ClientError: cannot serve {args.model}: {ready['error']}", file=sys.stderr, flush=True)
        serve.shutdown()
        return 2
    print(f"Serving {args.model} as endpoint '{opts.name}' on http://{args.host}:{args.port} (GET /ping, "
          f"POST /invocations, POST /endpoints/{opts.name}/invocations)", flush=True)
    stop.wait()
    # Deleting the app first drains it: the route goes, and each replica answers the requests
    # it holds before it stops (graceful_shutdown_timeout_s); serve.shutdown() alone drops them.
    print("Stopping: answering the requests in flight...", flush=True)
    serve.delete(opts.name)
    serve.shutdown()
    print("Stopped.", flush=True)
    return 0


def cmd_transform(args) -> int:
    from raysight.errors import ClientError
    from raysight.job_request import load_request
    from raysight.serve.codecs import EXECUTION_PARAMETERS
    from raysight.transform import job
    from raysight.transform.request import parse

    try:
        request = load_request(args.request)
        parse(request, args.model, EXECUTION_PARAMETERS)  # refused before any cluster time is spent
    except ClientError as exc:
        print(f"ClientError: {exc}", file=sys.stderr)
        return 2
    record = job.run(request, args.model)
    print(json.dumps({k: record.get(k) for k in ("TransformJobName", "TransformJobStatus", "FailureReason",
                                                  "TransformOutput")}, indent=2))
    return {"Completed": 0, "Stopped": 3}.get(record["TransformJobStatus"], 1)


def cmd_tune(args) -> int:
    from raysight import tune
    from raysight.errors import ClientError
    from raysight.job_request import load_request

    try:
        record = tune.run(load_request(args.request))
    except ClientError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"Best: {json.dumps(record.get('BestTrainingJob'))}")
    return 0 if record["HyperParameterTuningJobStatus"] == "Completed" else 1


def cmd_digits(args) -> int:
    from raysight.sample_data import digits

    counts = digits.export(args.root, limit=args.limit)
    request = digits.training_request(os.path.abspath(args.root),
                                      os.path.abspath(args.output or os.path.join(args.root, "output")), counts=counts)
    path = os.path.join(args.root, "request.json")
    digits.write_request(path, request)
    print(f"Wrote {counts['train']} training and {counts['validation']} validation images under {args.root}; "
          f"request in {path}")
    return 0


def cmd_shapes(args) -> int:
    from raysight.sample_data import shapes

    counts = shapes.write(args.root, args.train, args.validation, args.size, args.seed)
    root, output = os.path.abspath(args.root), os.path.abspath(args.output or os.path.join(args.root, "output"))
    for layout in shapes.FORMATS:
        request = shapes.training_request(root, output, layout, name=f"shapes-ssd-{layout}", counts=counts)
        with open(os.path.join(args.root, f"request-{layout}.json"), "w") as f:
            json.dump(request, f, indent=2)
    print(f"Wrote {counts['train']} training and {counts['validation']} validation images under {args.root} "
          f"(classes: {', '.join(shapes.CLASSES)}); requests in {args.root}/request-{{{','.join(shapes.FORMATS)}}}.json")
    return 0


def cmd_im2rec(args) -> int:
    from raysight import im2rec

    return im2rec.run(args)


def cmd_inspect(args) -> int:
    from raysight import inspection

    emit = (lambda row: print(json.dumps(row), flush=True)) if args.records else None
    summary = inspection.summarize(args.channel, args.root, emit=emit)
    if not args.records:
        print(json.dumps(summary, indent=2) if args.format == "json" else inspection.format_text(summary))
    return 1 if summary["problems"] else 0


def cmd_hyperparameters(args) -> int:
    from raysight import algorithms
    from raysight.hyperparams import schema_table

    try:
        algo = algorithms.get(args.algorithm)
    except KeyError as exc:
        print(f"ClientError: {exc.args[0]}", file=sys.stderr)
        return 2
    print(schema_table(algo.hyperparameters))
    return 0


def cmd_api(args) -> int:
    from raysight.api import ray_jobs, server
    from raysight.api.auth import default_credentials_file

    state = os.path.abspath(args.state or server.default_state())
    if args.action == "stop":
        ray_jobs.stop_local_cluster(state)
        return 0
    credentials = args.credentials or default_credentials_file()
    try:
        roots = [os.path.abspath(r) for r in args.local_root]
        missing = [r for r in roots if not os.path.isdir(r)]
        if missing:
            raise ValueError(f"--local-root {missing[0]} is not a folder")
        settings = server.Settings(args.host, args.port, state, credentials, args.serve_port, args.replica_cpus,
                                   args.max_running_jobs, roots)
        return server.serve(settings, echo=lambda *a: print(*a, flush=True))
    except (OSError, ValueError) as exc:
        print(f"ClientError: {exc}", file=sys.stderr)
        return 2


def cmd_demo(args) -> int:
    from raysight.demo import run_demo

    return run_demo(args.workdir, port=args.port, epochs=args.epochs)


COMMANDS = {"api": cmd_api, "train": cmd_train, "serve": cmd_serve, "transform": cmd_transform, "tune": cmd_tune, "digits": cmd_digits, "shapes": cmd_shapes,
            "im2rec": cmd_im2rec, "inspect": cmd_inspect,
            "hyperparameters": cmd_hyperparameters, "demo": cmd_demo}

if __name__ == "__main__":
    sys.exit(main())
