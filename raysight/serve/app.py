"""The endpoint: a Ray Serve deployment with a FastAPI ingress that speaks SageMaker's hosting
contract (GET /ping, POST /invocations, GET /execution-parameters) and, on the same port, the
sagemaker-runtime wire (POST /endpoints/{name}/invocations), so boto3's `invoke_endpoint` works.

Each request is read (refused past 6 MiB before it is read whole), decoded and resized in a
thread of its own, then joins a dynamic batch (`@serve.batch`): one forward pass, and for
detection one NMS call, for every request in it. Bad requests get a 4xx and never take the
replica down; the model loads in the background, so /ping answers 200 only once it can answer.
"""

import asyncio
import logging
import threading
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from ray import serve
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from raysight.serve import runtime
from raysight.serve.codecs import EXECUTION_PARAMETERS, MAX_PAYLOAD, HTTPError, check_content_type
from raysight.serve.model import ModelRunner, assigned, model_under, use_cpus
from raysight.serve.options import ServeOptions

logger = logging.getLogger("ray.serve")
CUSTOM = "X-Amzn-SageMaker-Custom-Attributes"
TARGET_MODEL = "X-Amzn-SageMaker-Target-Model"
DRAIN_LIMIT = 16 * 2**20
BATCH = "X-Raysight-Batch-Size"  # how many requests shared this one's forward pass

api = FastAPI(title="raysight endpoint",
              description="SageMaker's hosting contract and InvokeEndpoint for raysight models, on Ray Serve.")


@api.exception_handler(StarletteHTTPException)
async def _http_error(request, exc):  # 404/405 from routing, shaped as every other error here
    return JSONResponse({"message": f"{exc.detail}: {request.method} {request.url.path}"}, status_code=exc.status_code)


@api.exception_handler(RequestValidationError)
async def _bad_request(request, exc):
    return JSONResponse({"message": str(exc)}, status_code=400)


def container_error(exc: HTTPError) -> Response:
    return JSONResponse({"message": exc.message}, status_code=exc.status)


async def refuse_oversized(request: Request) -> None:
    """HTTPError 413 when the declared Content-Length passes 6 MiB. A body declared up to
    DRAIN_LIMIT is read and dropped first, so that an ordinary client, still sending, reads the
    answer instead of a connection reset; a larger one is refused before it is sent."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > MAX_PAYLOAD:
        if int(length) <= DRAIN_LIMIT:
            async for _ in request.stream():
                pass
        raise HTTPError(413, f"payload of {length} bytes exceeds {MAX_PAYLOAD}")


async def read_body(request: Request) -> bytes:
    """The body, never held in memory past 6 MiB (a chunked one is cut off as it passes)."""
    await refuse_oversized(request)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_PAYLOAD:
            raise HTTPError(413, f"payload of more than {size} bytes exceeds {MAX_PAYLOAD}")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment(name="raysight-model")
@serve.ingress(api)
class Endpoint:
    def __init__(self, model: str, options: dict):
        self.opts = ServeOptions.from_args(options)
        use_cpus(assigned("CPU") or self.opts.cpus_per_replica)
        self.model_uri = model
        self.runner: ModelRunner | None = None
        self.load_error: str | None = None
        self.loaded = threading.Event()
        self.batch_size = self.opts.batch_size()
        self._forward.set_max_batch_size(self.batch_size)
        self._forward.set_batch_wait_timeout_s(self.opts.batch_wait_timeout_ms / 1000)
        if self.opts.multi_model:
            async def load(uri: str) -> ModelRunner:
                return await asyncio.to_thread(ModelRunner, uri)

            self._model_for = serve.multiplexed(max_num_models_per_replica=self.opts.max_models_per_replica)(load)
            self.loaded.set()
        else:  # in the background: the replica takes /ping at once, and answers 200 when loaded
            threading.Thread(target=self._load, daemon=True, name="model-load").start()

    def _load(self) -> None:
        try:
            self.runner = ModelRunner(self.model_uri)
        except Exception as exc:  # a bad model.tar.gz is the user's to fix: /ping and `ready` say why
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("cannot load %s: %s", self.model_uri, self.load_error)
        self.loaded.set()

    async def ready(self) -> dict:
        """Waited on by `raysight serve` (through a handle): loaded, or the reason it cannot be."""
        import torch

        await asyncio.to_thread(self.loaded.wait)
        runner = self.runner
        return {"error": self.load_error, "algorithm": runner.algo.name if runner else None,
                "device": runner.device if runner else None, "torch_threads": torch.get_num_threads(),
                "max_batch_size": self.batch_size}

    # -- the container contract -------------------------------------------------------------
    @api.get("/ping")
    async def ping(self) -> Response:
        if self.loaded.is_set() and not self.load_error:
            return Response(status_code=200)
        return JSONResponse({"message": self.load_error or "model is loading"}, status_code=503)

    @api.get("/execution-parameters")
    async def execution_parameters(self) -> Response:
        return JSONResponse(EXECUTION_PARAMETERS)

    @api.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        try:
            body, content_type, headers = await self._answer(request)
        except HTTPError as exc:
            return container_error(exc)
        return Response(body, media_type=content_type, headers=headers)

    # -- the sagemaker-runtime wire ---------------------------------------------------------
    @api.post("/endpoints/{endpoint_name}/invocations")
    async def invoke_endpoint(self, endpoint_name: str, request: Request) -> Response:
        if endpoint_name != self.opts.name:
            return runtime.validation_error(f"Endpoint {endpoint_name} of account 000000000000 not found.")
        if not self.loaded.is_set():
            return runtime.not_ready(endpoint_name)
        try:
            await refuse_oversized(request)  # the runtime checks the size before anything else
            body, content_type, headers = await self._answer(request)
        except HTTPError as exc:
            if exc.status == 413:  # the runtime refuses it before the container sees it
                return runtime.validation_error(f"Request body exceeds the runtime's limit: {exc.message}")
            if exc.status == 503 and not self.load_error:
                return runtime.not_ready(endpoint_name)
            return runtime.model_error(exc, endpoint_name)
        headers["x-Amzn-Invoked-Production-Variant"] = self.opts.variant
        return Response(body, media_type=content_type, headers=headers)

    # -- one request ------------------------------------------------------------------------
    async def _answer(self, request: Request) -> tuple[bytes, str, dict]:
        try:
            return await self._answer_or_raise(request)
        except HTTPError:
            raise
        except Exception as exc:  # a fault of ours: a 500 with its reason, and the replica stays up
            logger.exception("invocation failed")
            raise HTTPError(500, f"{type(exc).__name__}: {exc}") from None

    async def _answer_or_raise(self, request: Request) -> tuple[bytes, str, dict]:
        tic = time.perf_counter()
        runner = await self._runner(request.headers.get(TARGET_MODEL))
        accept = runner.accept(request.headers.get("accept"))
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request)
        try:
            result, batch = await asyncio.wait_for(
                self._predict(runner, body, request.headers.get("content-type")), self.opts.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError(504, f"the model did not answer within {self.opts.timeout_s:g} s") from None
        payload, content_type = runner.render(result, accept)
        headers = {BATCH: str(batch)}
        echoed = runner.custom_attributes(request.headers.get(CUSTOM))
        if echoed is not None:
            headers[CUSTOM] = echoed
        inference_id = request.headers.get("X-Amzn-SageMaker-Inference-Id")
        if inference_id:  # the caller's id for this request, findable in the replica's log
            logger.info("inference %s answered in %.1f ms", inference_id[:64], 1000 * (time.perf_counter() - tic))
        return payload, content_type, headers

    async def _runner(self, target: str | None) -> ModelRunner:
        if self.opts.multi_model:
            uri = await asyncio.to_thread(model_under, self.model_uri, target)
            try:
                return await self._model_for(uri)
            except Exception as exc:
                raise HTTPError(400, f"target model '{target}' cannot be loaded: {exc}") from None
        if not self.loaded.is_set() or self.load_error:
            raise HTTPError(503, self.load_error or "model is loading; retry when GET /ping answers 200")
        return self.runner

    async def _predict(self, runner: ModelRunner, body: bytes, content_type: str | None):
        prepared = await asyncio.to_thread(runner.prepare, body, content_type)  # decodes run in parallel
        if self.batch_size == 1:
            [result] = await asyncio.to_thread(runner.predict, [prepared])
            return result, 1
        return await self._forward((runner, prepared))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.0)
    async def _forward(self, items: list) -> list:
        """One forward pass per model among the batch's requests (one model unless multi-model)."""
        groups: dict[int, list[int]] = {}
        for i, (runner, _) in enumerate(items):
            groups.setdefault(id(runner), []).append(i)
        results: list = [None] * len(items)
        for members in groups.values():
            runner = items[members[0]][0]
            answers = await asyncio.to_thread(runner.predict, [items[i][1] for i in members])
            for i, answer in zip(members, answers):
                results[i] = (answer, len(members))
        return results


def build(args: dict) -> serve.Application:
    """Serve app builder: `serve run raysight.serve.app:build model=/path/model.tar.gz [setting=value ...]`
    (the settings are ServeOptions' fields, as in serve_configs/*.yaml)."""
    if not args.get("model"):
        raise ValueError("the app needs a 'model' argument: a model.tar.gz path or URI (a prefix with multi_model)")
    opts = ServeOptions.from_args(args)
    return Endpoint.options(**opts.deployment()).bind(str(args["model"]), opts.as_args())


def run(model: str, host: str = "127.0.0.1", port: int = 8080, blocking: bool = False,
        options: ServeOptions | None = None) -> dict:
    """Start Serve's HTTP proxy on host:port, deploy the model at route '/', and wait until it
    is loaded. Returns `ready`'s answer: {"error": None, ...} or the reason it cannot load."""
    from raysight.cluster import ensure_ray

    opts = options or ServeOptions()
    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    handle = serve.run(build({"model": model, **opts.as_args()}), name=opts.name, route_prefix="/",
                       blocking=blocking)
    return handle.ready.remote().result(timeout_s=600)

