"""Data-parallel training across processes, as started by `torchrun --nproc_per_node N scripts/train.py ...`.

Each process reads its own share of every step's batches, DistributedDataParallel averages the gradients, and only
rank 0 writes checkpoints, logs and metrics. A single process (no torchrun) runs none of this.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Join the process group when started by torchrun; return (rank, world size, this process's device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), world, device


def broadcast_bytes(payload: bytes | None, world: int) -> bytes:
    """Rank 0's bytes on every rank (e.g. the tokenizer model it trained)."""
    if world == 1:
        return payload
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(value: float, world: int, device: torch.device) -> float:
    if world == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return float(tensor.item())


def cleanup(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
