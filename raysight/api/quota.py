"""`--max-running-jobs`: SageMaker's account quotas on concurrent jobs, as one limit per kind
of job. A create past it gets `ResourceLimitExceeded` in the service's words, and nothing runs."""
from __future__ import annotations

import threading
from contextlib import contextmanager

from raysight.api.wire import AwsError


class Quota:
    def __init__(self, limit: int = 0):
        self.limit = limit  # 0: no limit
        self._lock = threading.Lock()  # count and insert as one step: two creates cannot both pass

    @contextmanager
    def admit(self, quota_name: str, running):
        """Run the body (record and submit a job) only while `running()` is below the limit."""
        if not self.limit:
            yield
            return
        with self._lock:
            count = running()
            if count >= self.limit:
                raise AwsError("ResourceLimitExceeded",
                               f"The account-level service limit '{quota_name}' is {self.limit} Jobs, with current "
                               f"utilization of {count} Jobs and a request delta of 1 Jobs. This server's limit is "
                               "`raysight api --max-running-jobs`.")
            yield
