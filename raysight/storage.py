"""URIs to bytes: local paths, file:// and s3:// through pyarrow's filesystems.

S3 settings come from the standard AWS credential chain and endpoint variables
(AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3), so S3, MinIO and any S3-compatible
store work without raysight-specific configuration.
"""
from __future__ import annotations

import functools
import os
import posixpath
from urllib.parse import urlparse

import pyarrow.fs as pafs

from raysight import confine
from raysight.errors import ClientError


def is_remote(uri: str) -> bool:
    return urlparse(uri).scheme in ("s3", "https")


def _s3_filesystem() -> pafs.S3FileSystem:
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs["endpoint_override"] = parsed.netloc or parsed.path
        kwargs["scheme"] = parsed.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=5), **kwargs)


def path_of(uri: str) -> str:
    """The path inside its filesystem: `bucket/key` for S3, an absolute local path otherwise
    (checked against the local folders this process may touch: confine.py)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        return (parsed.netloc + parsed.path).rstrip("/")
    if parsed.scheme == "file":
        return confine.check(os.path.abspath(parsed.path), exempt=(cache_dir(),))
    if parsed.scheme in ("", None) or len(parsed.scheme) == 1:  # plain or Windows-drive path
        return confine.check(os.path.abspath(os.path.expanduser(uri)), exempt=(cache_dir(),))
    raise ClientError(f"unsupported URI scheme '{parsed.scheme}' in '{uri}' (use s3://, file:// or a path)")


def filesystem(uri: str) -> pafs.FileSystem:
    return _s3_filesystem() if urlparse(uri).scheme == "s3" else pafs.LocalFileSystem()


def resolve(uri: str) -> tuple[pafs.FileSystem, str]:
    """Return (filesystem, path inside it) for a URI or a local path."""
    path = path_of(uri)
    return filesystem(uri), path


def join(uri: str, *parts: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("s3", "file"):
        return uri.rstrip("/") + "/" + posixpath.join(*parts)
    return os.path.join(uri, *parts)


def read_bytes(uri: str) -> bytes:
    fs, path = resolve(uri)
    try:
        with fs.open_input_stream(path, compression=None) as f:
            return f.read()
    except FileNotFoundError:
        raise ClientError(f"'{uri}' does not exist") from None


def write_bytes(uri: str, data: bytes) -> None:
    """Write via a temporary name and a rename where the store allows it, so a
    reader never sees a half-written object."""
    fs, path = resolve(uri)
    parent = posixpath.dirname(path) if is_remote(uri) else os.path.dirname(path)
    fs.create_dir(parent, recursive=True)
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = path + ".partial"
        with fs.open_output_stream(tmp, compression=None) as f:
            f.write(data)
        fs.move(tmp, path)
    else:  # an S3 PUT is atomic already
        with fs.open_output_stream(path, compression=None) as f:
            f.write(data)


def exists(uri: str) -> bool:
    fs, path = resolve(uri)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def list_dirs(uri: str) -> list[str]:
    """Names of the folders directly under `uri` (on S3, its common prefixes); [] if none."""
    fs, path = resolve(uri)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def local_path(uri: str) -> str | None:
    """The filesystem path when `uri` is local, else None."""
    fs, path = resolve(uri)
    return path if isinstance(fs, pafs.LocalFileSystem) else None


CACHE_ROOT = os.path.join(os.path.expanduser("~"), ".cache", "raysight", "file-mode")


def cache_dir() -> str:
    """Where file mode keeps node-local copies: RAYSIGHT_CACHE_DIR, else ~/.cache/raysight."""
    return os.environ.get("RAYSIGHT_CACHE_DIR") or CACHE_ROOT


def cached(uri: str, cache_root: str | None = None) -> str:
    """File mode: a node-local copy of a remote object (downloaded once, renamed into
    place atomically so concurrent readers never see a partial file). Local URIs are
    returned as their path unchanged. A copy is named by the object's URI, size and
    modification time: an object replaced since is downloaded again, never read stale."""
    local = local_path(uri)
    if local is not None:
        return local
    root = cache_root or cache_dir()
    target = os.path.join(root, _cache_name(uri))
    if not os.path.exists(target):
        os.makedirs(root, exist_ok=True)
        fs, path = resolve(uri)
        tmp = f"{target}.{os.getpid()}.partial"
        with fs.open_input_stream(path, compression=None) as src, open(tmp, "wb") as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        os.replace(tmp, target)
    return target


@functools.lru_cache(maxsize=1 << 18)
def _cache_name(uri: str) -> str:
    """One HEAD per object per process: Ray starts new worker processes for every job,
    so each job sees the objects as they are when it starts."""
    import hashlib

    fs, path = resolve(uri)
    info = fs.get_file_info(path)
    version = f"{uri}\0{info.size}\0{info.mtime_ns}"
    return hashlib.sha1(version.encode()).hexdigest()[:16] + "-" + posixpath.basename(uri)


# Non-secret settings a Ray worker needs to reach the same S3 endpoint as the driver;
# credentials stay with each node's own AWS chain.
PROPAGATED_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def worker_env() -> dict[str, str]:
    """...and the confinement of local paths (confine.py), which means something even empty."""
    env = {k: os.environ[k] for k in PROPAGATED_ENV if os.environ.get(k)}
    if os.environ.get(confine.ROOTS_ENV) is not None:
        env[confine.ROOTS_ENV] = os.environ[confine.ROOTS_ENV]
    return env
