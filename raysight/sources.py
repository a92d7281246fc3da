"""Ray Data datasource for RecordIO files on any pyarrow filesystem.

Each read task takes a byte range of one file, finds the first record that
starts in it (from the `.idx` when there is one, else by resyncing on the
magic word) and streams records out in small blocks: a channel larger than
memory flows through without being held anywhere whole (pipe mode).
"""
from __future__ import annotations

import gzip
from typing import Iterator

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from raysight import storage
from raysight.errors import ClientError
from raysight.formats import recordio

ROWS_PER_BLOCK = 64
SCAN_CHUNK = 1 << 20


class RecordIODatasource(Datasource):
    """Rows {"source", "offset", "record"}: one per logical RecordIO record."""

    def __init__(self, uris: list[str], sizes: list[int], gzipped: bool = False,
                 split_points: dict[str, list[int]] | None = None, target_bytes: int = 32 << 20,
                 cache: str | None = None):
        super().__init__()
        self.cache = cache
        self.uris, self.sizes, self.gzipped = uris, sizes, gzipped
        self.split_points = split_points or {}
        self.target_bytes = target_bytes

    def estimate_inmemory_data_size(self) -> int:
        return sum(self.sizes)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        total = max(1, sum(self.sizes))
        chunk = max(1 << 20, min(self.target_bytes, total // max(1, parallelism) + 1))
        tasks = []
        for uri, size in zip(self.uris, self.sizes):
            for start, end in self._ranges(uri, size, chunk):
                meta = BlockMetadata(num_rows=None, size_bytes=end - start, input_files=[uri], exec_stats=None)
                read = lambda u=uri, s=start, e=end: read_range(u, s, e, self.gzipped, self.cache)  # noqa: E731
                tasks.append(ReadTask(read, meta))
        return tasks

    def _ranges(self, uri: str, size: int, chunk: int) -> list[tuple[int, int]]:
        if self.gzipped or size <= chunk:
            return [(0, size)]
        points = self.split_points.get(uri)
        if points:  # from the .idx: every range starts exactly on a record
            starts, last = [0], 0
            for p in points:
                if p - last >= chunk:
                    starts.append(p)
                    last = p
        else:
            starts = list(range(0, size, chunk))
        return [(s, e) for s, e in zip(starts, starts[1:] + [size])]


def read_range(uri: str, start: int, end: int, gzipped: bool, cache: str | None = None) -> Iterator[pa.Table]:
    """Blocks of the records of `uri` whose first byte lies in [start, end). File mode
    reads a node-local copy of the whole object; pipe mode streams the range."""
    fs, path = storage.resolve(uri)
    if cache and storage.is_remote(uri):
        fs, path = storage.resolve(storage.cached(uri, cache))
    if gzipped:
        with fs.open_input_stream(path, compression=None) as raw, gzip.GzipFile(fileobj=raw) as stream:
            yield from _blocks(uri, recordio.iter_records(stream, uri, 0), end=None)
        return
    with fs.open_input_file(path) as f:
        first = start if start == 0 else _resync(f, uri, start, end)
        if first is None:
            return
        f.seek(first)
        stream = pa.BufferedInputStream(f, buffer_size=1 << 20)
        yield from _blocks(uri, recordio.iter_records(stream, uri, first), end=end)


def _resync(f, uri: str, start: int, end: int) -> int | None:
    """The first record starting in [start, end): records start 4-byte aligned."""
    pos = start + (-start) % 4
    while pos < end:
        data = f.read_at(SCAN_CHUNK + 8, pos)
        found = recordio.find_record_start(data)
        if found >= 0:
            return pos + found if pos + found < end else None
        if len(data) < SCAN_CHUNK + 8:
            return None
        pos += SCAN_CHUNK
    return None


def _blocks(uri: str, records, end: int | None) -> Iterator[pa.Table]:
    offsets, payloads = [], []
    for offset, payload in records:
        if end is not None and offset >= end:
            break
        offsets.append(offset)
        payloads.append(payload)
        if len(payloads) >= ROWS_PER_BLOCK:
            yield _table(uri, offsets, payloads)
            offsets, payloads = [], []
    if payloads:
        yield _table(uri, offsets, payloads)


def _table(uri, offsets, payloads) -> pa.Table:
    return pa.table({"source": pa.array([uri] * len(offsets)), "offset": pa.array(offsets, pa.int64()),
                     "record": pa.array(payloads, pa.binary())})


def check_idx(uri: str, idx_uri: str, sample: int | None = None) -> list[int]:
    """Offsets from an `.idx`, checked to hold a record's magic word: all of them, or
    `sample` evenly spaced ones (remote files: one ranged GET each)."""
    entries = recordio.parse_idx(storage.read_bytes(idx_uri).decode(), idx_uri)
    fs, path = storage.resolve(uri)
    size = fs.get_file_info(path).size
    offsets = sorted(offset for _, offset in entries)
    checked = entries if not sample or len(entries) <= sample else entries[:: len(entries) // sample]
    with fs.open_input_file(path) as f:
        for key, offset in checked:
            head = f.read_at(8, offset) if 0 <= offset < size else b""
            if len(head) < 8 or head[:4] != recordio.MAGIC_BYTES or (head[7] >> 5) not in (0, 1):
                raise ClientError(f"{idx_uri}: key {key} offset {offset} does not point at a record in {uri}")
    return offsets
