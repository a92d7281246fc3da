"""Channels → Ray Data datasets.

The driver reads only small index files (`.lst`, manifests, `.idx`) and checks
them; images are read and decoded lazily inside Ray Data tasks, so pipe-mode
channels stream from storage without a local copy.
"""
from __future__ import annotations

import posixpath
from typing import Any, Callable

import numpy as np
import pyarrow.fs as pafs

from raysight import storage
from raysight.errors import ClientError
from raysight.formats.lst import parse_lst

ROWS_PER_BLOCK = 256


def list_files(uri: str) -> list[str]:
    """Every file under a prefix (or the file itself), as paths relative to `uri`."""
    fs, path = storage.resolve(uri)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        return [""]
    if info.type == pafs.FileType.NotFound:
        raise ClientError(f"'{uri}' does not exist")
    infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
    return sorted(
        posixpath.relpath(i.path, path).replace("\\", "/") for i in infos if i.type == pafs.FileType.File
    )


def find_one(uri: str, suffix: str, channel: str) -> str:
    """The single `*suffix` file a channel holds (the channel URI may name it directly)."""
    if uri.endswith(suffix):
        return uri
    found = [f for f in list_files(uri) if f.endswith(suffix)]
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ClientError(f"channel '{channel}' ({uri}) holds {what} {suffix} files; expected exactly one")
    return storage.join(uri, found[0])


def lst_rows(image_channel, lst_channel, label_check: Callable[[tuple, str], str | None]) -> list[dict[str, Any]]:
    """Rows {id, uri, label} from an images + `.lst` channel pair, checked against the
    images that really exist under the image channel's root."""
    lst_uri = find_one(lst_channel.uri, ".lst", lst_channel.name)
    entries = parse_lst(storage.read_bytes(lst_uri).decode("utf-8", errors="replace"), lst_uri)
    present = set(list_files(image_channel.uri))
    problems = []
    rows = []
    for lineno, e in enumerate(entries, start=1):
        rel = e.path.lstrip("/")
        if rel not in present:
            problems.append(f"{lst_uri} entry {e.index}: image '{e.path}' not found under {image_channel.uri}")
        bad_label = label_check(e.labels, f"{lst_uri} entry {e.index}")
        if bad_label:
            problems.append(bad_label)
        if len(problems) >= 20:
            problems.append("(stopped after 20 problems)")
            break
        rows.append({"id": e.index, "uri": storage.join(image_channel.uri, rel), "label": list(e.labels)})
    if problems:
        raise ClientError(problems)
    return rows


def rows_dataset(rows: list[dict[str, Any]], decode, shuffle: bool, batch_size: int = 32):
    """A Ray Dataset that reads and decodes `rows` lazily with `decode`.

    Shuffling happens on the light index rows before any image is read, and
    re-runs every time the dataset is iterated, so each epoch sees a new order.
    """
    import ray.data

    blocks = max(1, min(len(rows) // ROWS_PER_BLOCK + 1, 200))
    ds = ray.data.from_items(rows, override_num_blocks=blocks)
    if shuffle:
        ds = ds.random_shuffle()
    return ds.map_batches(decode, batch_size=batch_size, batch_format="numpy")


def read_all(uris) -> list[bytes]:
    """Bytes of each URI; one filesystem object per scheme for the whole batch."""
    out, filesystems = [], {}
    for uri in map(str, uris):
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in filesystems:
            filesystems[scheme] = storage.filesystem(uri)
        with filesystems[scheme].open_input_stream(storage.path_of(uri), compression=None) as f:
            out.append(f.read())
    return out
