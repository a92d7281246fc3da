"""The API's own records, in SQLite under `--state`: what SageMaker keeps and Ray Jobs does not
(the request, the creation time, the Ray submission id, a stop asked for, the final record).

A job row is committed before its Ray Job is submitted, under the submission id the row names,
and marked submitted after: a crash in between leaves a row that `pending()` hands back on the
next start and that is submitted then (Ray refuses a second submission under one id), so there
is neither a Ray Job without a row nor a row whose job is lost.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    name TEXT NOT NULL,
    kind TEXT NOT NULL,              -- 'training' | 'tuning'
    submission_id TEXT,              -- the Ray Job; NULL for a job refused before it ran
    created REAL NOT NULL,
    request TEXT NOT NULL,
    submitted INTEGER NOT NULL DEFAULT 0,
    stop_requested REAL,
    final TEXT,                      -- the Describe record, once the job has ended
    PRIMARY KEY (kind, name)
);
CREATE TABLE IF NOT EXISTS resources (  -- models, endpoint configs, endpoints: records, not jobs
    kind TEXT NOT NULL,              -- 'model' | 'endpoint-config' | 'endpoint'
    name TEXT NOT NULL,
    created REAL NOT NULL,
    record TEXT NOT NULL,            -- what Describe* answers (an endpoint's also its apps)
    PRIMARY KEY (kind, name)
);
"""


class State:
    def __init__(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        self.path = os.path.join(folder, "raysight-api.sqlite3")
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)

    def _run(self, sql: str, args=()) -> list[sqlite3.Row]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(sql, args).fetchall()
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return rows

    def add(self, kind: str, name: str, request: dict[str, Any], submission_id: str | None,
            final: dict[str, Any] | None = None) -> bool:
        """False when the name is taken (SageMaker's ResourceInUse)."""
        try:
            self._run("INSERT INTO jobs (name, kind, submission_id, created, request, final) VALUES (?,?,?,?,?,?)",
                      (name, kind, submission_id, time.time(), json.dumps(request),
                       json.dumps(final) if final else None))
        except sqlite3.IntegrityError:
            return False
        return True

    def mark_submitted(self, kind: str, name: str) -> None:
        self._run("UPDATE jobs SET submitted = 1 WHERE kind = ? AND name = ?", (kind, name))

    def stop(self, kind: str, name: str) -> None:
        self._run("UPDATE jobs SET stop_requested = COALESCE(stop_requested, ?) WHERE kind = ? AND name = ?",
                  (time.time(), kind, name))

    def finish(self, kind: str, name: str, record: dict[str, Any]) -> None:
        self._run("UPDATE jobs SET final = ? WHERE kind = ? AND name = ?", (json.dumps(record), kind, name))

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        rows = self._run("SELECT * FROM jobs WHERE kind = ? AND name = ?", (kind, name))
        return _row(rows[0]) if rows else None

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [_row(r) for r in self._run("SELECT * FROM jobs WHERE kind = ? ORDER BY created", (kind,))]

    def unfinished(self, kind: str) -> list[dict[str, Any]]:
        """Rows whose job has no final record yet: running, or not yet known to have ended."""
        return [_row(r) for r in self._run("SELECT * FROM jobs WHERE kind = ? AND final IS NULL AND "
                                           "submission_id IS NOT NULL", (kind,))]

    def pending(self) -> list[dict[str, Any]]:
        """Rows committed whose submission may not have reached Ray."""
        return [_row(r) for r in self._run("SELECT * FROM jobs WHERE submitted = 0 AND submission_id IS NOT NULL")]

    # -- resources -------------------------------------------------------------------------
    def add_resource(self, kind: str, name: str, record: dict[str, Any]) -> bool:
        """False when the name is taken."""
        try:
            self._run("INSERT INTO resources (kind, name, created, record) VALUES (?,?,?,?)",
                      (kind, name, time.time(), json.dumps(record)))
        except sqlite3.IntegrityError:
            return False
        return True

    def resource(self, kind: str, name: str) -> dict[str, Any] | None:
        rows = self._run("SELECT record FROM resources WHERE kind = ? AND name = ?", (kind, name))
        return json.loads(rows[0]["record"]) if rows else None

    def replace_resource(self, kind: str, name: str, record: dict[str, Any]) -> None:
        self._run("UPDATE resources SET record = ? WHERE kind = ? AND name = ?", (json.dumps(record), kind, name))

    def remove_resource(self, kind: str, name: str) -> bool:
        with self._lock:
            cursor = self._db.execute("DELETE FROM resources WHERE kind = ? AND name = ?", (kind, name))
            return cursor.rowcount > 0

    def resources(self, kind: str) -> list[dict[str, Any]]:
        rows = self._run("SELECT record FROM resources WHERE kind = ? ORDER BY created", (kind,))
        return [json.loads(r["record"]) for r in rows]

    def close(self) -> None:
        self._db.close()


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["request"] = json.loads(out["request"])
    out["final"] = json.loads(out["final"]) if out["final"] else None
    return out


class StateInUse(OSError):
    """Another `raysight api` serves this state folder."""


_held: list[int] = []  # the lock's descriptor lives as long as this process


def hold_lock(folder: str) -> None:
    """One server per state folder: an exclusive `flock` on `<state>/server.lock`, which the
    OS releases when the holder dies (SIGKILL included), so a stale lock never blocks a restart.
    The holder's pid is written into the file for the refusal's message."""
    import fcntl

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "server.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateInUse(f"another raysight api (pid {holder}) is serving the state folder {folder}; "
                         "stop it first, or give this one its own --state") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    _held.append(fd)
