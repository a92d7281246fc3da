"""Small collectives that work on one worker (no process group) and on many."""
from __future__ import annotations

import torch


def _active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def device() -> torch.device:
    """Where collective tensors must live: the GPU for NCCL, else the CPU."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(t: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if _active():
        t = t.to(device())
        dist.all_reduce(t)
    return t


def all_max(value: int) -> int:
    import torch.distributed as dist

    if not _active():
        return value
    t = torch.tensor([value], dtype=torch.int32, device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def gather(obj) -> list:
    import torch.distributed as dist

    if not _active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
