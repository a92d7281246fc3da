"""SageMaker's inference content types: which are accepted, how answers are shaped."""
from __future__ import annotations

from raysight.formats import IMAGE_TYPES


MAX_PAYLOAD = 6 * 1024 * 1024  # InvokeEndpoint's limit, 6 MiB
# GET /execution-parameters: what batch transform uses where CreateTransformJob leaves it unset
EXECUTION_PARAMETERS = {"MaxConcurrentTransforms": 4, "BatchStrategy": "SINGLE_RECORD", "MaxPayloadInMB": 6}


class HTTPError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def media_type(header: str | None) -> str:
    return (header or "").split(";")[0].strip().lower()


def check_content_type(header: str | None) -> None:
    if media_type(header) not in IMAGE_TYPES:
        raise HTTPError(415, f"unsupported Content-Type '{header or ''}'; send one of {', '.join(IMAGE_TYPES)}")


def choose_accept(header: str | None, offered: tuple[str, ...]) -> str:
    """The first offered type the Accept header allows; the first offered when absent or */*."""
    if not header:
        return offered[0]
    for part in header.split(","):
        kind = part.strip()
        base = media_type(kind)
        if base in ("*/*", "application/*"):
            return offered[0]
        exact = kind.split(";q=")[0].replace(" ", "").lower()  # e.g. application/json;annotation=1
        if exact in offered:
            return exact
        if base in offered:
            return base
    raise HTTPError(406, f"unsupported Accept '{header}'; use one of {', '.join(offered)}")
