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


def extract(uri: str, dest: str) -> dict[str, Any]:
    """Safely extract a model.tar.gz (no member may leave `dest`) and return its metadata."""
    blob = storage.read_bytes(uri)
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            tar.extractall(dest, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise ClientError(f"{uri} is not a readable model.tar.gz: {exc}") from None
    meta_path = os.path.join(dest, META)
    if not os.path.exists(meta_path):
        raise ClientError(f"{uri} has no {META}; it was not written by raysight")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["hyperparameters"] = _from_json(meta.get("hyperparameters") or {})
    return meta


def load_params(folder: str, meta: dict[str, Any]) -> dict:
    """The state dict to serve from an extracted model.tar.gz (weights only: no code runs)."""
    import torch

    return torch.load(os.path.join(folder, meta["params"]), map_location="cpu", weights_only=True)


def state_dict_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()
