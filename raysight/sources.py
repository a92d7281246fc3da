"""Ray Data datasources: RecordIO files on any pyarrow filesystem, and index rows.

RecordIO: each read task takes a byte range of one file, finds the first record
that starts in it (from the `.idx` when there is one, else by resyncing on the
magic word) and streams records out in small blocks: a channel larger than
memory flows through without being held anywhere whole (pipe mode).

Both fix their read tasks when built, and raysight passes that count as
`override_num_blocks`: Ray then neither splits their blocks nor refuses to fuse
the read with the decode that follows (`map_batches(batch_size=None)`), so one
task reads and decodes its records, with no trip through the object store between.
"""
from __future__ import annotations

import gzip
import itertools
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from raysight import storage
from raysight.errors import ClientError
from raysight.formats import recordio

ROWS_PER_BLOCK = 64
SCAN_CHUNK = 1 << 20
MIN_RANGE, MAX_RANGE = 1 << 20, 32 << 20  # bytes of .rec per read task
RANGE_TARGET = 8 << 20
MAX_TASKS = 4000  # Ray Data warns above 5,000 read tasks


class RecordIODatasource(Datasource):
    """Rows {"source", "offset", "record"}: one per logical RecordIO record."""

    def __init__(self, uris: list[str], sizes: list[int], gzipped: bool = False,
                 split_points: dict[str, list[int]] | None = None, parallelism: int = 4,
                 cache: str | None = None):
        """`parallelism`: at least this many ranges when the files are large enough
        (raysight asks for 2 per CPU); ranges are 1–32 MiB, about 8 MiB."""
        super().__init__()
        self.cache = cache
        self.sizes, self.gzipped = sizes, gzipped
        points = split_points or {}  # not kept: read tasks need only their own range
        total = max(1, sum(sizes))
        tasks = min(MAX_TASKS, max(parallelism, total // RANGE_TARGET))
        chunk = max(MIN_RANGE, min(MAX_RANGE, total // tasks + 1))
        self.ranges = [(uri, start, end) for uri, size in zip(uris, sizes)
                       for start, end in self._ranges(uri, size, chunk, points.get(uri))]

    def estimate_inmemory_data_size(self) -> int:
        return sum(self.sizes)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        """The ranges fixed when built, whatever `parallelism` Ray asks for (see above)."""
        tasks, gz, cache = [], self.gzipped, self.cache  # bound by value: a task pickles no `self`
        for uri, start, end in self.ranges:
            meta = BlockMetadata(num_rows=None, size_bytes=end - start, input_files=[uri], exec_stats=None)
            read = lambda u=uri, s=start, e=end: read_range(u, s, e, gz, cache)  # noqa: E731
            tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
        return tasks

    def _ranges(self, uri: str, size: int, chunk: int, points: list[int] | None = None) -> list[tuple[int, int]]:
        if self.gzipped or size <= chunk:
            return [(0, size)]
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
    for (_, before), (key, offset) in itertools.pairwise(entries):
        if offset <= before:  # im2rec writes one line per record, in file order
            raise ClientError(f"{idx_uri}: key {key} offset {offset} is not after the previous entry's {before}; "
                              "an .idx lists its records in file order")
    offsets = [offset for _, offset in entries]
    checked = entries if not sample or len(entries) <= sample else entries[:: len(entries) // sample]
    with fs.open_input_file(path) as f:
        for key, offset in checked:
            head = f.read_at(8, offset) if 0 <= offset < size else b""
            if len(head) < 8 or head[:4] != recordio.MAGIC_BYTES or (head[7] >> 5) not in (0, 1):
                raise ClientError(f"{idx_uri}: key {key} offset {offset} does not point at a record in {uri}")
    return offsets


class IndexRowsDatasource(Datasource):
    """Index rows ({id, uri, label, ...} from a `.lst`, annotations or a manifest) kept
    in Ray's object store and read `rows_per_task` at a time. With `shuffle`, every
    execution (every epoch) reads them in a new order: the shuffle happens on the light
    rows, before any image is read, as MXNet's iterators shuffle their index, and needs
    no all-to-all shuffle stage. With a `seed` (ShuffleConfig.Seed) the order of epoch
    e is the permutation drawn from (seed, e): the same in every job with that seed,
    new every epoch. Ray numbers a dataset's executions (DataContext._execution_idx,
    what its own seeded file shuffles use); only the executing call gets a context."""

    def __init__(self, rows: list[dict[str, Any]], rows_per_task: int, shuffle: bool, seed: int | None = None):
        import ray

        self.count, self.rows_per_task, self.shuffle, self.seed = len(rows), max(1, rows_per_task), shuffle, seed
        self.table = ray.put(pa.Table.from_pylist(rows))

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def num_tasks(self) -> int:
        return max(1, -(-self.count // self.rows_per_task))

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        import ray

        table = ray.get(self.table)
        order = np.arange(self.count)
        if self.shuffle:
            epoch = data_context._execution_idx if data_context is not None else 0
            order = np.random.default_rng(None if self.seed is None else (self.seed, epoch)).permutation(self.count)
        tasks = []
        for start in range(0, max(1, self.count), self.rows_per_task):
            # take, not slice: a pickled slice carries the whole table's buffers into every task
            part = table.take(order[start:start + self.rows_per_task])
            meta = BlockMetadata(num_rows=part.num_rows, size_bytes=part.nbytes, input_files=None, exec_stats=None)
            tasks.append(ReadTask(lambda p=part: [p], meta, per_task_row_limit=per_task_row_limit))
        return tasks
