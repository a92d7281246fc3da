"""Which local folders a job may read and write when it runs for someone else.

`raysight api --local-root DIR` names them; the API sets RAYSIGHT_LOCAL_ROOTS in its own
process, in every Ray Job it submits and in every worker of those jobs (cluster.runtime_env),
and `storage.path_of`, the one place a local path is resolved, checks each path against them
after resolving `..` and symlinks. So a channel, a manifest's `source-ref`, an `.lst` entry
with `../`, a symlink in a data folder, an output path or a model outside them are refused
wherever they are met. Unset (the CLI run by its own user): no limit, as any program the user
runs. Set but empty: no local path at all, only s3://, as on SageMaker.
"""
from __future__ import annotations

import os

from raysight.errors import ClientError

ROOTS_ENV = "RAYSIGHT_LOCAL_ROOTS"


def roots() -> list[str] | None:
    """The allowed folders (resolved), or None when this process is not confined."""
    value = os.environ.get(ROOTS_ENV)
    if value is None:
        return None
    return [os.path.realpath(r) for r in value.split(os.pathsep) if r]


def env_value(folders: list[str]) -> str:
    return os.pathsep.join(os.path.realpath(f) for f in folders)


def inside(path: str, allowed: list[str]) -> bool:
    real = os.path.realpath(path)
    return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep) for root in allowed)


def refusal(path: str, allowed: list[str]) -> str:
    """Why `path` may not be touched, in one sentence."""
    if not allowed:
        return (f"'{path}' is a local path, and this server accepts only s3:// locations "
                "(start raysight api with --local-root DIR to allow local folders)")
    real = os.path.realpath(path)
    shown = f"'{path}'" + (f" (which resolves to '{real}')" if real != os.path.abspath(path) else "")
    return f"{shown} is outside the local folders this server may touch ({', '.join(allowed)})"


def check(path: str, exempt: tuple[str, ...] = ()) -> str:
    """`path` itself when this process may touch it; ClientError otherwise. `exempt` folders
    are raysight's own (the node-local File-mode cache)."""
    allowed = roots()
    if allowed is None or inside(path, allowed):
        return path
    if exempt and inside(path, [os.path.realpath(e) for e in exempt]):
        return path
    raise ClientError(refusal(path, allowed))
