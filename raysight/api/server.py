"""`raysight api`: SageMaker's service API (AWS JSON 1.1, `POST /`, `X-Amz-Target`), signed
with SigV4, over the same train and tune code the CLI runs. One FastAPI route; each request is
authenticated, parsed against botocore's model, and handed to the operation that owns it.
"""
from __future__ import annotations

import json
import os
import sys
import traceback
import uuid
from dataclasses import dataclass, field

from raysight import confine
from raysight.api import auth, wire
from raysight.api.wire import AwsError

DEFAULT_PORT = 8090
# The largest body an operation needs: InvokeEndpoint's 6 MB payload (SageMaker's own bound)
# plus room for its headers' worth of JSON; a control-plane request is far smaller. Larger
# bodies get 413 from their Content-Length, before authentication and before being read.
MAX_BODY = 6 * 1024 * 1024 + 64 * 1024
# X-Amz-Target prefix → botocore service model (and SigV4 signing name)
SERVICES = {"SageMaker": "sagemaker", "Logs_20140328": "logs"}


def default_state() -> str:
    return os.path.join(os.path.expanduser("~"), ".raysight", "api")


@dataclass
class Settings:
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    state: str = ""
    credentials: str = ""
    serve_port: int = 8000  # Ray Serve's HTTP proxy, where the endpoints' applications run
    replica_cpus: float = 1.0
    max_running_jobs: int = 0  # per kind (training, tuning); 0: no limit
    local_roots: list[str] = field(default_factory=list)  # local folders requests may name (none: s3:// only)


class Api:
    """The operations, by name; built once per server."""

    def __init__(self, settings: Settings, echo=print):
        from raysight.api import ray_jobs
        from raysight.api.endpoints import Endpoints
        from raysight.api.logs import Logs
        from raysight.api.models import Models
        from raysight.api.quota import Quota
        from raysight.api.state import State
        from raysight.api.tags import Tags
        from raysight.api.training import Training
        from raysight.api.transform import Transforms
        from raysight.api.tuning import Tuning

        self.keys = auth.load_keys(settings.credentials)
        # this process, every Ray Job it submits and their workers touch only these local folders
        os.environ[confine.ROOTS_ENV] = confine.env_value(settings.local_roots)
        self.state = State(settings.state)
        dashboard = None if os.environ.get("RAY_ADDRESS") else ray_jobs.local_cluster(settings.state, echo)
        self.jobs = ray_jobs.Jobs(dashboard)
        quota = Quota(settings.max_running_jobs)
        tuning = Tuning(self.state, self.jobs, quota)
        training = Training(self.state, self.jobs, tuning, quota)
        models = Models(self.state)
        transforms = Transforms(self.state, self.jobs, models)
        # the dashboard Ray Jobs speaks to also takes Serve's declarative config
        self.endpoints = Endpoints(self.state, models, dashboard or self.jobs.client.get_address(),
                                   settings.serve_port, settings.replica_cpus, echo)
        self.operations = {
            "CreateTrainingJob": training.create,
            "DescribeTrainingJob": training.describe,
            "StopTrainingJob": training.stop,
            "ListTrainingJobs": training.list,
            "CreateHyperParameterTuningJob": tuning.create,
            "DescribeHyperParameterTuningJob": tuning.describe,
            "StopHyperParameterTuningJob": tuning.stop,
            "ListHyperParameterTuningJobs": tuning.list,
            "ListTrainingJobsForHyperParameterTuningJob": tuning.children,
            "CreateModel": models.create_model,
            "DescribeModel": models.describe_model,
            "DeleteModel": models.delete_model,
            "ListModels": models.list_models,
            "CreateEndpointConfig": models.create_endpoint_config,
            "DescribeEndpointConfig": models.describe_endpoint_config,
            "DeleteEndpointConfig": models.delete_endpoint_config,
            "ListEndpointConfigs": models.list_endpoint_configs,
            "CreateEndpoint": self.endpoints.create,
            "DescribeEndpoint": self.endpoints.describe,
            "UpdateEndpoint": self.endpoints.update,
            "DeleteEndpoint": self.endpoints.delete,
            "ListEndpoints": self.endpoints.list,
            "CreateTransformJob": transforms.create,
            "DescribeTransformJob": transforms.describe,
            "StopTransformJob": transforms.stop,
            "ListTransformJobs": transforms.list,
        }
        self.tags = Tags(self.state)
        self.operations.update({"AddTags": self.tags.add, "ListTags": self.tags.list, "DeleteTags": self.tags.delete})
        logs = Logs(self.state, self.jobs, tuning)
        self.log_operations = {"DescribeLogStreams": logs.describe_streams, "GetLogEvents": logs.events}
        self.owners = {"training": training, "tuning": tuning, "transform": transforms}
        for row in self.state.pending():  # committed before a crash, maybe never submitted
            echo(f"Submitting {row['kind']} job {row['name']}, recorded but not yet submitted")
            self.owners[row["kind"]].submit(row["name"], row["request"], row["submission_id"])

    def handle(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict:
        target = headers.get("x-amz-target", "")
        prefix = target.partition(".")[0]
        if prefix not in SERVICES:
            raise AwsError("UnknownOperationException", f"X-Amz-Target {target!r} names no service this "
                                                        f"server speaks ({', '.join(SERVICES)})")
        auth.verify(self.keys, method, url, headers, body, tuple(SERVICES.values()))
        op = wire.operation(SERVICES[prefix], prefix, target)
        operations = self.log_operations if prefix == "Logs_20140328" else self.operations
        if op.name not in operations:
            raise AwsError("UnknownOperationException", f"raysight api does not implement {target}; it "
                                                        f"implements {', '.join(sorted(operations))}")
        request = wire.parse_body(body, op)
        answer = operations[op.name](request)
        if op.name.startswith("Create") and operations is self.operations:
            self.tags.created(request, answer)
        return answer

    def invoke(self, name: str, url: str, headers: dict[str, str], body: bytes):
        """InvokeEndpoint (sagemaker-runtime, signed for service 'sagemaker')."""
        from raysight.api.invoke import invoke

        auth.verify(self.keys, "POST", url, headers, body, ("sagemaker",))
        return invoke(self.endpoints, name, headers, body)


def app(api: Api):
    """A bare Starlette app (FastAPI's core): one route, the body read raw, since the
    signature covers its exact bytes."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    def answer(status: int, body: dict, request_id: str) -> Response:
        headers = {"x-amzn-RequestId": request_id}
        if status == 413:  # the body is left unread: close the connection rather than drain it
            headers["Connection"] = "close"
        return Response(json.dumps(body, default=str), status_code=status,
                        media_type="application/x-amz-json-1.1", headers=headers)

    def internal(request_id: str, what: str) -> Response:
        """A server fault: a 500 the client can retry, with a request id to quote; the
        exception's text stays in this server's log."""
        print(f"InternalFailure (request id {request_id}) in {what}:\n{traceback.format_exc()}",
              file=sys.stderr, flush=True)
        return answer(500, {"__type": "InternalFailure", "message": f"An internal error occurred (request id "
                                                                    f"{request_id})."}, request_id)

    async def call(request) -> Response:
        request_id = str(uuid.uuid4())
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = await read_capped(request, headers, "ValidationException")
            out = await run_in_threadpool(api.handle, request.method, str(request.url), headers, body)
        except AwsError as exc:
            return answer(exc.status, exc.body(), request_id)
        except Exception:  # noqa: BLE001
            return internal(request_id, headers.get("x-amz-target", "?"))
        return answer(200, out, request_id)

    async def invocations(request) -> Response:
        request_id = str(uuid.uuid4())
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            body = await read_capped(request, headers, "ValidationError")  # the runtime's code
            return await run_in_threadpool(api.invoke, request.path_params["name"], str(request.url), headers, body)
        except AwsError as exc:
            return answer(exc.status, exc.body(), request_id)
        except Exception:  # noqa: BLE001
            return internal(request_id, f"InvokeEndpoint {request.path_params['name']}")

    async def read_capped(request, headers: dict[str, str], code: str) -> bytes:
        """The body, refused with 413 before authentication: from Content-Length before a byte
        is read, or once a body without one (chunked) passes the bound."""
        too_large = AwsError(code, f"Request body is larger than the {MAX_BODY} bytes any operation takes", 413)
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            raise too_large
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_BODY:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    return Starlette(routes=[Route("/", call, methods=["POST"]),
                             Route("/endpoints/{name}/invocations", invocations, methods=["POST"])])


def serve(settings: Settings, echo=print) -> int:
    import uvicorn

    from raysight.api.state import hold_lock

    hold_lock(settings.state)  # one server per state folder; the OS lets go when this process ends
    api = Api(settings, echo)
    echo(f"raysight api listening on http://{settings.host}:{settings.port} "
         f"(state {api.state.path}; AWS_ENDPOINT_URL_SAGEMAKER=http://{settings.host}:{settings.port})")
    uvicorn.Server(uvicorn.Config(app(api), host=settings.host, port=settings.port, log_level="warning")).run()
    api.state.close()
    return 0
