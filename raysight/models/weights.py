"""Starting weights: ImageNet-pretrained backbones (no download, ever) and the
`model` channel of incremental training.

Pretrained lookup order, first hit wins:
  1. RAYSIGHT_PRETRAINED_WEIGHTS: a weights file (path or s3:// URI) or a folder
     holding torchvision's file name for the network (e.g. resnet50-0676ba61.pth)
     or `<arch>.pth` (e.g. resnet50.pth);
  2. the torch hub cache: $TORCH_HOME/hub/checkpoints/<torchvision file name>
     (where torchvision's own download would have put it).
"""
from __future__ import annotations

import io
import os

import torch

from raysight import storage
from raysight.errors import ClientError

ENV = "RAYSIGHT_PRETRAINED_WEIGHTS"


def torchvision_filename(arch: str) -> str | None:
    """torchvision's cache file name for `arch`'s default ImageNet weights."""
    from torchvision.models import get_model_weights

    try:
        return os.path.basename(get_model_weights(arch).DEFAULT.url)
    except (ValueError, AttributeError):
        return None


def candidates(arch: str) -> list[str]:
    names = [n for n in (torchvision_filename(arch), f"{arch}.pth") if n]
    places = []
    configured = os.environ.get(ENV)
    if configured:
        if configured.endswith((".pth", ".pt")):
            places.append(configured)
        else:
            places += [storage.join(configured, n) for n in names]
    places += [os.path.join(torch.hub.get_dir(), "checkpoints", n) for n in names]
    return places


def load_pretrained(arch: str) -> dict[str, torch.Tensor]:
    """The first state dict found for `arch`; ClientError naming every place tried."""
    tried = candidates(arch)
    for place in tried:
        if storage.exists(place):
            return read_state_dict(place)
    raise ClientError(f"use_pretrained_model=1: no ImageNet weights for {arch}; looked in "
                      f"{', '.join(tried)}. Put torchvision's weights file in one of these places, or point "
                      f"{ENV} at a weights file or folder (path or s3:// URI)")


def read_state_dict(uri: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(io.BytesIO(storage.read_bytes(uri)), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the user's to fix
        raise ClientError(f"{uri}: not a PyTorch state dict ({exc})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ClientError(f"{uri}: expected a state dict, got {type(state).__name__}")
    return state


def merge_backbone(model: torch.nn.Module, state: dict, head_prefixes: tuple[str, ...], source: str) -> None:
    """Load everything but the classification head; shapes must match elsewhere."""
    own = model.state_dict()
    body = {k: v for k, v in state.items() if not k.startswith(head_prefixes)}
    wrong = [k for k, v in body.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if not k.startswith(head_prefixes) and k not in body
               and not k.endswith("num_batches_tracked")]
    if wrong or missing:
        raise ClientError(f"{source} does not fit the network: "
                          + (f"shape mismatch in {wrong[:5]}" if wrong else f"missing {missing[:5]}"))
    model.load_state_dict(body, strict=False)
