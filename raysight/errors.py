"""Errors a user can act on.

SageMaker reports bad requests, hyperparameters and data as a job failure whose
`FailureReason` starts with ``ClientError:``; raysight keeps that contract so
scripts that grep for it keep working.
"""
from __future__ import annotations

import logging
import sys

PREFIX = "ClientError: "


class ClientError(ValueError):
    """The request, its hyperparameters or its data are wrong; retrying will not help."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__(PREFIX + "; ".join(self.problems))

    def __reduce__(self):  # across Ray, rebuilt from its problems (its text would gain a prefix)
        return type(self), (self.problems,)


def _chain(exc: BaseException | None):
    """The exception and what it wraps: Python's cause and context, and the `cause` of
    a Ray task error (the exception the remote task raised)."""
    seen = set()
    while exc is not None and id(exc) not in seen and len(seen) < 32:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) if isinstance(getattr(exc, "cause", None), BaseException) \
            else exc.__cause__ or exc.__context__


def find_client_error(exc: BaseException | None) -> ClientError | None:
    """The ClientError itself; Ray's wrapper (a RayTaskError that is also an instance of
    its cause's class) is skipped for the cause it carries."""
    for e in _chain(exc):
        if isinstance(e, ClientError) and not isinstance(getattr(e, "cause", None), BaseException):
            return e
    return None


def client_error_text(exc: BaseException) -> str | None:
    """The one `ClientError: ...` line for an exception, also when Ray has wrapped it
    (a data problem found in a Ray Data task reaches the train loop that way)."""
    found = find_client_error(exc)
    if found is not None:
        return str(found)[:1024]
    text = str(exc)  # the remote exception came back as text only
    at = text.find(PREFIX)
    if at < 0:
        return None
    line = text[at:].splitlines()[0]
    while line.startswith(PREFIX + PREFIX):
        line = line[len(PREFIX):]
    return line[:1024]


class HideDataFaults(logging.Filter):
    """For a console handler: drops the records logged about a ClientError on its way
    up (Ray Data prints a failed task's traceback before the exception reaches the
    train loop, which reports the one `ClientError:` line SageMaker shows). Ray Data
    logs inside its `except` blocks, so the exception is read from the record or from
    the handler's thread. File handlers keep the full traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else sys.exc_info()[1]
        return find_client_error(exc) is None and PREFIX not in record.getMessage()
