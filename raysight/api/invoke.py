"""InvokeEndpoint on the API server: the sagemaker-runtime wire (restJson,
`POST /endpoints/{name}/invocations`), checked with SigV4 like every other call, forwarded to
the chosen variant's Serve application, and answered in the runtime's shapes
(`raysight.serve.runtime`), so botocore raises the ClientError a SageMaker user catches."""
from __future__ import annotations

import json

from starlette.responses import Response

from raysight.serve import runtime
from raysight.serve.codecs import MAX_PAYLOAD, HTTPError

VARIANT = "x-amzn-sagemaker-target-variant"
CUSTOM = "x-amzn-sagemaker-custom-attributes"


def _message(payload: bytes) -> str:
    try:
        return str(json.loads(payload).get("message", ""))
    except (ValueError, AttributeError):
        return payload.decode("utf-8", "replace")[:1000]


def invoke(endpoints, name: str, headers: dict[str, str], body: bytes) -> Response:
    if len(body) > MAX_PAYLOAD:
        return runtime.validation_error(f"Request body of {len(body)} bytes exceeds the runtime's limit of "
                                        f"{MAX_PAYLOAD} bytes")
    for attempt in range(2):
        app = endpoints.route(name, headers.get(VARIANT))
        if isinstance(app, str):
            return runtime.validation_error(app)
        try:
            status, payload, answer = endpoints.forward(app, headers, body)
        except OSError as exc:
            return runtime.error("ServiceUnavailable", 503, f"Endpoint {name} cannot be reached now ({exc}); retry")
        # 404: the proxy no longer has that route, since an update switched traffic meanwhile
        if status != 404 or attempt:
            break
    answer = {k.lower(): v for k, v in answer.items()}
    if status == 200:
        out = {"x-Amzn-Invoked-Production-Variant": app["variant"]}
        if CUSTOM in answer:
            out["X-Amzn-SageMaker-Custom-Attributes"] = answer[CUSTOM]
        return Response(payload, media_type=answer.get("content-type"), headers=out)
    message = _message(payload)
    if status == 503 and message.startswith("model is loading"):
        return runtime.not_ready(name)
    if status == 413:
        return runtime.validation_error(f"Request body exceeds the runtime's limit: {message}")
    return runtime.model_error(HTTPError(status, message), name)
