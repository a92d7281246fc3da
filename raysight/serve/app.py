"""Ray Serve app speaking SageMaker's hosting contract: GET /ping, POST /invocations.

Bad requests get a 4xx with a JSON {"message": ...} and never take the replica
down; the model loads before the replica takes traffic, so /ping answering
200 means predictions are ready.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from raysight import algorithms, images
from raysight.serve.codecs import HTTPError, check_content_type, choose_accept

logger = logging.getLogger("ray.serve")
MAX_PAYLOAD = 6 * 1024 * 1024  # InvokeEndpoint's limit


@serve.deployment(name="raysight-model", ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=16)
class ModelServer:
    def __init__(self, model: str):
        self.algo, net, self.meta = algorithms.load_model(model)
        self.predictor = self.algo.predictor(net, self.meta)
        self.offered = self.predictor.accepts
        logger.info("loaded %s model from %s", self.algo.name, model)

    async def __call__(self, request: Request) -> Response:
        path, method = request.url.path.rstrip("/") or "/", request.method
        try:
            if path == "/ping" and method == "GET":
                return Response(status_code=200)
            if path == "/invocations" and method == "POST":
                return await self._invoke(request)
            if path == "/execution-parameters" and method == "GET":
                body = {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}
                return Response(json.dumps(body), media_type="application/json")
            raise HTTPError(404, f"no route {method} {path}; use GET /ping or POST /invocations")
        except HTTPError as exc:
            return Response(json.dumps({"message": exc.message}), status_code=exc.status,
                            media_type="application/json")

    async def _invoke(self, request: Request) -> Response:
        check_content_type(request.headers.get("content-type"))
        accept = choose_accept(request.headers.get("accept"), self.offered)
        body = await request.body()
        if not body:
            raise HTTPError(400, "empty request body; send one encoded image")
        if len(body) > MAX_PAYLOAD:
            raise HTTPError(413, f"payload of {len(body)} bytes exceeds {MAX_PAYLOAD}")
        try:
            image = images.decode_rgb(body, "request body")
        except images.BadImage as exc:
            raise HTTPError(400, str(exc)) from None
        tic = time.perf_counter()
        [result] = await asyncio.to_thread(self.predictor.predict_batch, [image])
        payload, content_type = self.predictor.render(result, accept)
        logger.info("invocation answered in %.1f ms", 1000 * (time.perf_counter() - tic))
        return Response(payload, media_type=content_type)


def build(args: dict) -> serve.Application:
    """Serve app builder: `serve run raysight.serve.app:build model=/path/model.tar.gz`."""
    if not args.get("model"):
        raise ValueError("the app needs a 'model' argument: a model.tar.gz path or URI")
    return ModelServer.bind(args["model"])


def run(model: str, host: str = "127.0.0.1", port: int = 8080, blocking: bool = False, name: str = "raysight"):
    """Start Serve's HTTP proxy on host:port and deploy the model at route '/'."""
    from raysight.cluster import ensure_ray

    ensure_ray()
    serve.start(http_options={"host": host, "port": port})
    return serve.run(build({"model": model}), name=name, route_prefix="/", blocking=blocking)
