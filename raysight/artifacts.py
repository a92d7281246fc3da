"""model.tar.gz: write after training, read for serving and incremental training.

Layout mirrors SageMaker's (`<prefix>-NNNN.params` per saved epoch, 1-based,
`model-shapes.json`, `hyperparams.json`) plus `raysight.json`, which names the
algorithm and the params file to serve. `.params` files are PyTorch state dicts,
loaded with weights_only=True so a tarball cannot run code.
"""
from __future__ import annotations

import io
import json
import os
import tarfile
from typing import Any


from raysight import storage
from raysight.errors import ClientError

META = "raysight.json"
# A model.tar.gz is read from a caller's location: bound what it may cost before reading it.
MAX_MODEL_BYTES_ENV = "RAYSIGHT_MAX_MODEL_BYTES"
DEFAULT_MAX_MODEL_BYTES = 10 << 30  # the tarball, and its members together once expanded
# Weights barely compress (a ResNet's .params: about 1.1x), so members that expand to far more
# than their tarball are a gzip bomb; the floor keeps small metadata-only tarballs readable.
MAX_EXPANSION, EXPANSION_FLOOR = 50, 64 << 20


def _json_ready(hp: dict[str, Any]) -> dict[str, Any]:
    """Hyperparameters as JSON; keys starting with '_' are derived at run time, not the user's."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in hp.items() if not k.startswith("_")}


def _from_json(hp: dict[str, Any]) -> dict[str, Any]:
    """The inverse of _json_ready: JSON has no tuples, parsed hyperparameters do."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in hp.items()}


def build_tarball(algorithm: str, prefix: str, hp: dict[str, Any], params: dict[int, bytes], serve_epoch: int,
                  input_shape: tuple[int, int, int], extra: dict[str, Any] | None = None) -> bytes:
    """`params` maps 0-based epoch → serialized state dict; `serve_epoch` is the one to serve."""
    channels, height, width = input_shape
    names = {e: f"{prefix}-{e + 1:04d}.params" for e in params}
    meta = {"algorithm": algorithm, "params": names[serve_epoch], "epoch": serve_epoch,
            "hyperparameters": _json_ready(hp), **(extra or {})}
    files = {
        META: json.dumps(meta, indent=2).encode(),
        "hyperparams.json": json.dumps(_json_ready(hp), indent=2).encode(),
        "model-shapes.json": json.dumps([{"shape": [hp.get("mini_batch_size", 1), channels, height, width],
                                          "name": "data"}]).encode(),
        **{names[e]: blob for e, blob in params.items()},
    }
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, blob in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(blob))
    return buf.getvalue()


def max_model_bytes() -> int:
    return int(os.environ.get(MAX_MODEL_BYTES_ENV) or DEFAULT_MAX_MODEL_BYTES)


def extract(uri: str, dest: str) -> dict[str, Any]:
    """Extract a model.tar.gz into `dest` and return its metadata, refusing (ClientError) a
    tarball over its size bound, members that expand past theirs (checked from each header,
    before its data is decompressed), any member that is not a plain file or folder inside
    `dest` (`../`, absolute names, links, devices), and metadata naming a params file that is
    not one of its members."""
    bound = max_model_bytes()
    fs, path = storage.resolve(uri)
    size = fs.get_file_info(path).size
    if size is not None and size > bound:
        raise ClientError(f"{uri} is {size} bytes, over the {bound}-byte bound for a model.tar.gz "
                          f"({MAX_MODEL_BYTES_ENV})")
    blob = storage.read_bytes(uri)
    expanded_bound = min(bound, max(EXPANSION_FLOOR, MAX_EXPANSION * len(blob)))
    try:
        files = _extract_members(blob, dest, expanded_bound, uri)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ClientError(f"{uri} is not a readable model.tar.gz: {exc}") from None
    if META not in files:
        raise ClientError(f"{uri} has no {META}; it was not written by raysight")
    with open(os.path.join(dest, META)) as f:
        meta = json.load(f)
    if meta.get("params") not in files:
        raise ClientError(f"{uri}: {META} names params file {meta.get('params')!r}, which is not a file of the "
                          "tarball")
    meta["hyperparameters"] = _from_json(meta.get("hyperparameters") or {})
    return meta


def _extract_members(blob: bytes, dest: str, expanded_bound: int, uri: str) -> set[str]:
    """Stream the tarball member by member; the names of the files written."""
    files, total = set(), 0
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r|gz") as tar:
        for member in tar:
            problem = _member_problem(member)
            if problem:
                raise ClientError(f"{uri}: member {member.name!r} {problem}; a model.tar.gz holds plain files")
            total += member.size
            if total > expanded_bound:
                raise ClientError(f"{uri} expands past {expanded_bound} bytes (a gzip bomb, or over "
                                  f"{MAX_MODEL_BYTES_ENV}); refused before decompressing it")
            # filter="data" (Python 3.11.4+) is Python's own guard; the checks above hold without it
            tar.extract(member, dest, filter="data")
            if member.isfile():
                files.add(os.path.normpath(member.name))
    return files


def _member_problem(member: tarfile.TarInfo) -> str | None:
    parts = member.name.replace("\\", "/").split("/")
    if member.name.startswith("/") or (len(member.name) > 1 and member.name[1] == ":"):
        return "is an absolute path"
    if ".." in parts:
        return "leaves the folder (..)"
    if not (member.isfile() or member.isdir()):
        return "is a link or a special file"
    return None


def load_params(folder: str, meta: dict[str, Any]) -> dict:
    """The state dict to serve from an extracted model.tar.gz (weights only: no code runs)."""
    import pickle

    import torch

    try:
        return torch.load(os.path.join(folder, meta["params"]), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        raise ClientError(f"{meta['params']} is not a weights-only PyTorch state dict (refused, nothing of it "
                          f"was run): {str(exc).splitlines()[0][:300]}") from None


def state_dict_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
