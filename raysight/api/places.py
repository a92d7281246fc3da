"""Every location a request names, checked before anything is created: a relative path is
refused (a Ray Job runs in a working directory of its own), and a local one must lie inside
the folders `raysight api --local-root` allows, after `..` and symlinks are resolved
(confine.py; none by default, so only s3:// is taken, as on SageMaker). A local manifest's
entries are read and checked too. The same confinement holds again inside every job, where
each path is resolved (storage.path_of), so what a file points to later is refused there.
"""
from __future__ import annotations

import json
import posixpath
from typing import Any

from raysight import storage
from raysight.api.wire import validation
from raysight.errors import ClientError
from raysight.job_request import locations

MANIFEST_TYPES = ("ManifestFile", "AugmentedManifestFile")


def check(places: list[tuple[str, Any]]) -> None:
    """ValidationException naming the first (field, location) the API may not touch."""
    for where, uri in places:
        if not isinstance(uri, str) or _remote(uri):
            continue
        if not uri.startswith(("/", "file://")):
            raise validation(f"Value {uri!r} at '{where}' is a relative path; the API's jobs run in a "
                             "working directory of their own: give s3://, file:// or an absolute path")
        _local(where, uri)


def check_definition(definition: dict[str, Any], field: str = "") -> None:
    """A training job definition's channels, output and checkpoint paths, and the entries of
    its local manifests."""
    check([(field + where, holder.get(key)) for where, holder, key in locations(definition)])
    for i, channel in enumerate(definition.get("InputDataConfig") or []):
        source = ((channel or {}).get("DataSource") or {}).get("S3DataSource") or {}
        if source.get("S3DataType") in MANIFEST_TYPES:
            check_manifest(f"{field}InputDataConfig.{i + 1}.DataSource.S3DataSource.S3Uri", source.get("S3Uri"))


def check_manifest(where: str, uri: Any) -> None:
    """Each object a local manifest lists (ManifestFile's prefix + keys, an augmented
    manifest's `*-ref` values) must be one the API may touch."""
    if not isinstance(uri, str) or _remote(uri):
        return
    path = _local(where, uri)
    try:
        text = _manifest_text(path)
    except (OSError, ValueError, ClientError):
        return  # unreadable: the job names that problem, with the line
    for line, ref in _references(text, posixpath.dirname(path)):
        if isinstance(ref, str) and not _remote(ref):
            _local(f"{where} (manifest entry {line})", ref)


def _remote(uri: str) -> bool:
    return uri.startswith("s3://") or storage.is_remote(uri)


def _local(where: str, uri: str) -> str:
    try:
        return storage.path_of(uri)
    except ClientError as exc:
        raise validation(f"Value {uri!r} at '{where}' failed to satisfy constraint: {'; '.join(exc.problems)}") from None


def _manifest_text(path: str) -> str:
    import gzip
    import os

    if os.path.isdir(path):
        found = [n for n in sorted(os.listdir(path)) if n.endswith((".manifest", ".jsonl", ".json", ".gz"))]
        if len(found) != 1:
            return ""
        path = os.path.join(path, found[0])
    with open(path, "rb") as f:
        blob = f.read(64 << 20)
    return (gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob).decode("utf-8", errors="replace")


def _references(text: str, base: str):
    """(line or element number, location) of every object a manifest names."""
    if text.lstrip().startswith("["):
        doc = json.loads(text)
        if isinstance(doc, list) and doc and isinstance(doc[0], dict) and isinstance(doc[0].get("prefix"), str):
            prefix = doc[0]["prefix"]
            for i, key in enumerate(doc[1:], 1):
                if isinstance(key, str):
                    yield i, prefix + key if "://" in prefix or prefix.startswith("/") else posixpath.join(base, prefix + key)
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        for key, value in (row.items() if isinstance(row, dict) else []):
            if key.endswith("-ref") and isinstance(value, str):
                yield lineno, value if "://" in value or value.startswith("/") else posixpath.join(base, value)
