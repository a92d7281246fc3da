"""Errors a user can act on.

SageMaker reports bad requests, hyperparameters and data as a job failure whose
`FailureReason` starts with ``ClientError:``; raysight keeps that contract so
scripts that grep for it keep working.
"""


class ClientError(ValueError):
    """The request, its hyperparameters or its data are wrong; retrying will not help."""

    def __init__(self, problems):
        if isinstance(problems, str):
            problems = [problems]
        self.problems = list(problems)
        super().__init__("ClientError: " + "; ".join(self.problems))


def client_error_text(exc: BaseException) -> str | None:
    """The `ClientError: ...` line inside an exception, also when Ray has wrapped it
    (a data problem found in a Ray Data task reaches the train loop that way)."""
    text = str(exc)
    at = text.find("ClientError: ")
    return text[at:].splitlines()[0][:1024] if at >= 0 else None
