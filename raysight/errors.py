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
