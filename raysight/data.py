"""Channels → Ray Data datasets.

The driver reads only small index files (`.lst`, manifests, `.idx`) and checks
them; images are read and decoded lazily inside Ray Data tasks, so pipe-mode
channels stream from storage without a local copy.
"""
from __future__ import annotations

import gzip
import json
import os
import posixpath
from typing import Any, Callable

import numpy as np
import pyarrow.fs as pafs

from raysight import confine, storage, workarounds
from raysight.errors import ClientError, client_error_text
from raysight.formats.lst import parse_lst


ROWS_PER_BLOCK = 256  # index rows read and decoded per task, unless decoded they exceed:
DECODED_BLOCK_BYTES = 64 << 20
CACHED_ROWS_PER_BLOCK = 128
# Decoded channels up to this share of the object store are decoded once and kept there
# (see decoded_once); 0 turns the cache off.
DECODE_CACHE_FRACTION = float(os.environ.get("RAYSIGHT_DECODE_CACHE_FRACTION", "0.25"))


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


def channel_files(channel) -> tuple[str, list[str]]:
    """(root URI, the channel's files relative to it): every object under an `S3Prefix`,
    or the objects a `ManifestFile` lists (SageMaker's JSON array: `{"prefix": ...}` then
    keys; URI = prefix + key), each checked to exist with one listing of the prefix."""
    if channel.s3_data_type != "ManifestFile":
        return channel.uri, list_files(channel.uri)
    where = f"channel '{channel.name}' ManifestFile {channel.uri}"
    try:
        doc = json.loads(read_text(channel.uri))
    except ValueError as exc:
        raise ClientError(f"{where}: not JSON ({exc})") from None
    if not (isinstance(doc, list) and doc and isinstance(doc[0], dict) and isinstance(doc[0].get("prefix"), str)
            and doc[0]["prefix"]):
        raise ClientError(f'{where}: must be a JSON array whose first element is {{"prefix": "s3://bucket/key/"}}')
    bad = [i for i, key in enumerate(doc[1:], 1) if not isinstance(key, str) or not key]
    if bad:
        raise ClientError(f"{where}: element {bad[0]} must be a key (a non-empty string) relative to the prefix")
    prefix = doc[0]["prefix"]
    cut = prefix.rfind("/") + 1  # the prefix may end inside a name: "s3://b/p/img" + "1.jpg"
    root = prefix[:cut].rstrip("/") if cut else "."
    if "://" not in root:
        from raysight.job_request import absolute

        root = absolute(root)
    files = [prefix[cut:] + key for key in doc[1:]]
    missing = sorted(set(files) - set(list_files(root)))
    if missing:
        raise ClientError(f"{where}: {len(missing)} listed object(s) not found under {prefix}, e.g. "
                          + ", ".join(missing[:5]))
    return root, files


def image_files(channel) -> tuple[str, list[str]]:
    """channel_files of a channel of images (or annotations) that an index refers to by
    relative path: a prefix (folder) that holds files, never a file itself."""
    root, files = channel_files(channel)
    if files == [""]:
        raise ClientError(f"channel '{channel.name}' ({channel.uri}) names a file; it must be a prefix (folder) "
                          "that holds the files")
    if not files:
        raise ClientError(f"channel '{channel.name}' ({channel.uri}) is empty")
    return root, files


def find_one(channel, suffix: str, also: str | None = None) -> str:
    """The single `*suffix` (or `*also`) file a channel holds; its URI may name it directly."""
    suffixes = (suffix,) + ((also,) if also else ())
    if channel.s3_data_type != "ManifestFile" and channel.uri.endswith(suffixes):
        return channel.uri
    root, files = channel_files(channel)
    for wanted in suffixes:
        found = [f for f in files if f.endswith(wanted)]
        if len(found) == 1:
            return storage.join(root, found[0]) if found[0] else root
        if found:
            break
    what = "no" if not found else f"{len(found)}"
    raise ClientError(f"channel '{channel.name}' ({channel.uri}) holds {what} {suffix} files; expected exactly one")


def read_text(uri: str) -> str:
    """A small index file's text; gzip (CompressionType Gzip) is recognised by its magic bytes."""
    blob = storage.read_bytes(uri)
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    return blob.decode("utf-8", errors="replace")


def confined(uri: str, where: str) -> list[str]:
    """[] when this job may read `uri` (always, unless `raysight api --local-root` confines it:
    confine.py); else the problem, found here in the driver before any image is read."""
    if confine.roots() is None or storage.is_remote(uri) or uri.startswith("s3://"):
        return []
    try:
        storage.path_of(uri)
    except ClientError as exc:
        return [f"{where}: {p}" for p in exc.problems]
    return []


def lst_rows(image_channel, lst_channel, label_check: Callable[[tuple, str], str | None]) -> list[dict[str, Any]]:
    """Rows {id, uri, label} from an images + `.lst` channel pair, checked against the
    images that really exist under the image channel's root."""
    lst_uri = find_one(lst_channel, ".lst", ".lst.gz")
    entries = parse_lst(read_text(lst_uri), lst_uri)
    root, files = image_files(image_channel)
    present = set(files)
    problems = []
    rows = []
    for e in entries:
        rel = e.path.lstrip("/")
        if rel not in present:
            problems.append(f"{lst_uri} entry {e.index}: image '{e.path}' not found under {image_channel.uri}")
        bad_label = label_check(e.labels, f"{lst_uri} entry {e.index}")
        if bad_label:
            problems.append(bad_label)
        if len(problems) >= 20:
            problems.append("(stopped after 20 problems)")
            break
        rows.append({"id": e.index, "uri": storage.join(root, rel), "label": list(e.labels)})
        problems += confined(rows[-1]["uri"], f"{lst_uri} entry {e.index}")
    if problems:
        raise ClientError(problems)
    return rows


def manifest_rows(channel, to_label: Callable[[Any, str], list[float]]) -> list[dict[str, Any]]:
    """Rows {id, uri, label} from an augmented manifest; `source-ref` values may be
    s3:// URIs or paths relative to the manifest's folder."""
    from raysight.formats.manifest import parse_manifest

    uri = channel.uri
    if list_files(uri) != [""]:
        found = [f for f in list_files(uri) if f.endswith((".manifest", ".jsonl", ".json", ".gz"))]
        if len(found) != 1:
            raise ClientError(f"channel '{channel.name}' ({uri}) must name one augmented manifest file")
        uri = storage.join(uri, found[0])
    lines = parse_manifest(read_text(uri), channel.attribute_names, uri)
    base = uri.rsplit("/", 1)[0]
    rows, problems = [], []
    for line in lines:
        where = f"{uri} line {line.lineno}"
        try:
            label = to_label(line.label, where)
        except (ValueError, ClientError) as exc:
            problems.extend(exc.problems if isinstance(exc, ClientError) else [f"{where}: {exc}"])
            continue
        ref = line.ref if "://" in line.ref else storage.join(base, line.ref)
        rows.append({"id": line.lineno, "uri": ref, "label": label})
        problems += confined(ref, f"{where} source-ref")
    if problems:
        raise ClientError(problems[:20])
    return rows


def rows_dataset(rows: list[dict[str, Any]], decode, shuffle: bool, seed: int | None = None,
                 once: bool | None = None):
    """A Ray Dataset that reads and decodes `rows` lazily with `decode`, one task
    reading and decoding each block of rows (sources.IndexRowsDatasource).

    Shuffling happens on the light index rows before any image is read, and
    re-runs every time the dataset is iterated, so each epoch sees a new order; with a
    seed (ShuffleConfig.Seed) epoch e's order comes from (seed, e). `once`: decode
    before training (see decoded_once; None decides from these rows alone); its epochs
    then shuffle blocks of decoded rows, seeded the same way.
    """
    import ray.data

    from raysight.sources import IndexRowsDatasource

    workarounds.install()  # this process plans (and may execute) the dataset
    if once is None:
        once = decoded_once(len(rows), decode)
    if shuffle and once:
        order = np.random.default_rng(seed).permutation(len(rows))
        rows = [rows[i] for i in order]
    row_bytes = decode.row_bytes or 1
    source = IndexRowsDatasource(rows, min(ROWS_PER_BLOCK, max(1, DECODED_BLOCK_BYTES // row_bytes)),
                                 shuffle=shuffle and not once, seed=seed)
    ds = ray.data.read_datasource(source, override_num_blocks=source.num_tasks())
    ds = ds.map_batches(decode, batch_size=None, batch_format="numpy")
    if once:
        # Epochs then shuffle small blocks of decoded rows (plus the loop's local shuffle
        # buffer), as MXNet's record iterators shuffle chunks: a full random_shuffle of
        # the pixels would cost more per epoch than the decode it saves.
        small = max(1, min(-(-len(rows) // CACHED_ROWS_PER_BLOCK), 1000))
        ds = materialize(ds.repartition(small))
        if not shuffle:
            return ds
        from ray.data import RandomSeedConfig

        return ds.randomize_block_order(seed=None if seed is None else RandomSeedConfig(seed, True))
    return ds


def decoded_once(count: int, decode) -> bool:
    """Whether to decode a channel once, before training, and keep the pixels in Ray's
    object store for every epoch: only when decoding is deterministic (no random
    augmentation) and the decoded channel fits DECODE_CACHE_FRACTION of the object
    store. On small data sets this removes the per-epoch decode tasks that compete with
    the training step for the CPU (benchmarks/README.md); large channels stream as before."""
    import ray

    if not decode.deterministic or DECODE_CACHE_FRACTION <= 0:
        return False
    store = ray.cluster_resources().get("object_store_memory", 0)
    return count * decode.row_bytes <= DECODE_CACHE_FRACTION * store


def materialize(ds):
    """ds.materialize(), with a bad record's ClientError raised as itself."""
    try:
        return ds.materialize()
    except Exception as exc:  # noqa: BLE001 - Ray wraps the task's ClientError
        text = client_error_text(exc)
        if text is None:
            raise
        raise ClientError(text.removeprefix("ClientError: ")) from None


def channel_datasets(channel, rows: list[dict[str, Any]] | None, decode, training: bool, shards: int = 1) -> list:
    """One channel as Ray datasets, one per worker for a ShardedByS3Key training channel,
    else one: index `rows` (.lst, annotations, manifest) read and decoded lazily by
    `decode`, or, when `rows` is None, the channel's RecordIO records (each read task
    decodes the records it read: the blocks are whole byte ranges)."""
    n = shards if training and channel.distribution == "ShardedByS3Key" else 1
    if rows is None:
        return [recordio_dataset(channel, (i, n)).map_batches(decode, batch_size=None, batch_format="numpy")
                for i in range(n)]
    once = decoded_once(len(rows), decode)  # the whole channel against the budget, not each share
    if once:
        print(f"channel '{channel.name}': {len(rows)} images decoded once, kept in Ray's object store "
              f"(RAYSIGHT_DECODE_CACHE_FRACTION={DECODE_CACHE_FRACTION:g})", flush=True)
    return [rows_dataset(part, decode, shuffle=training, seed=channel.shuffle_seed, once=once)
            for part in shard_rows(rows, n, channel)]


def file_mode_cache(channel) -> str | None:
    """The node-local cache folder for a File-mode channel; None streams (Pipe mode)."""
    return storage.cache_dir() if channel.input_mode == "File" else None


def shard_rows(rows: list[dict[str, Any]], shards: int, channel) -> list[list[dict[str, Any]]]:
    """ShardedByS3Key: worker i of n gets the rows of every n-th object (sorted keys)."""
    if shards == 1:
        return [rows]
    keys = sorted({r["uri"] for r in rows})
    if len(keys) < shards:
        raise ClientError(f"channel '{channel.name}' is ShardedByS3Key over {len(keys)} objects for {shards} "
                          "workers; it needs at least one object per worker")
    owner = {k: i % shards for i, k in enumerate(keys)}
    return [[r for r in rows if owner[r["uri"]] == i] for i in range(shards)]


def recordio_dataset(channel, shard: tuple[int, int] = (0, 1)):
    """A channel's `.rec` files (an `.idx` beside one sets its split points) as a Ray
    dataset of raw records, streamed by byte ranges. `shard` = (i, n) keeps every n-th
    file from the i-th (ShardedByS3Key)."""
    import ray.data

    from raysight.sources import RecordIODatasource, check_idx

    workarounds.install()
    root, files = channel_files(channel)
    gz = channel.compression == "Gzip"
    recs = [f for f in files if f.endswith(".rec") or (gz and f.endswith(".rec.gz"))]
    if files == [""]:  # the URI names one file
        recs = [""]
    if not recs:
        raise ClientError(f"channel '{channel.name}' ({channel.uri}) holds no .rec files")
    index, count = shard
    if len(recs) < count:
        raise ClientError(f"channel '{channel.name}' is ShardedByS3Key over {len(recs)} .rec files for {count} "
                          "workers; it needs at least one file per worker")
    recs = recs[index::count]
    uris = [storage.join(root, f) if f else root for f in recs]
    fs = storage.filesystem(channel.uri)
    sizes = [fs.get_file_info(storage.path_of(u)).size for u in uris]
    split_points = {}
    for uri, rel in zip(uris, recs):
        idx = (rel or uri)[: -len(".rec")] + ".idx" if not gz else None
        if idx and idx in files:
            sample = 256 if storage.is_remote(uri) else None
            split_points[uri] = check_idx(uri, storage.join(root, idx), sample)
    cpus = int(ray.cluster_resources().get("CPU", 1)) if ray.is_initialized() else 1
    source = RecordIODatasource(uris, sizes, gzipped=gz, split_points=split_points, parallelism=2 * max(1, cpus),
                                cache=file_mode_cache(channel))
    return ray.data.read_datasource(source, override_num_blocks=len(source.ranges))


def read_all(uris, cache: str | None = None) -> list[bytes]:
    """Bytes of each URI; one filesystem object per scheme for the whole batch. In file
    mode (`cache` set) remote objects are read through a node-local copy there."""
    out, filesystems = [], {}
    for uri in map(str, uris):
        if cache and storage.is_remote(uri):
            with open(storage.cached(uri, cache), "rb") as f:
                out.append(f.read())
            continue
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in filesystems:
            filesystems[scheme] = storage.filesystem(uri)
        with filesystems[scheme].open_input_stream(storage.path_of(uri), compression=None) as f:
            out.append(f.read())
    return out
