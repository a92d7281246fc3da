"""The sagemaker-runtime wire (restJson): InvokeEndpoint's errors as the runtime shapes them,
so botocore raises the ClientError a SageMaker user already catches. The code travels in the
x-amzn-ErrorType header (botocore reads the text before ':'), the text in the JSON body."""
from __future__ import annotations

import json

from starlette.responses import Response

from raysight.serve.codecs import HTTPError

ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.sagemaker/"
LOG_STREAM = "arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/{name}"


def error(code: str, status: int, message: str, **fields) -> Response:
    body = {"ErrorCode": code, "Message": message, "message": message, **fields}
    return Response(json.dumps(body), status_code=status, media_type="application/json",
                    headers={"x-amzn-ErrorType": f"{code}:{ERROR_NAMESPACE}"})


def validation_error(message: str) -> Response:
    return error("ValidationError", 400, message)


def not_ready(name: str) -> Response:
    return error("ModelNotReadyException", 429, f"Model for endpoint {name} is not loaded yet; retry")


def model_error(exc: HTTPError, name: str) -> Response:
    """A container answer other than 200 (bad image, Accept, timeout) → ModelError (424)."""
    original = json.dumps({"message": exc.message})
    return error("ModelError", 424, f"Received client error ({exc.status}) from primary with message "
                 f'"{exc.message}". See the endpoint\'s log.' if exc.status < 500 else
                 f"Received server error ({exc.status}) from primary with message \"{exc.message}\".",
                 OriginalStatusCode=exc.status, OriginalMessage=original, LogStreamArn=LOG_STREAM.format(name=name))
