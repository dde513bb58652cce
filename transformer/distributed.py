"""The process: threads, allocator, seed, and data-parallel ranks as started by `torchrun --nproc_per_node N ...`.

Each process reads its own share of every step's batches, DistributedDataParallel averages the gradients, and only
rank 0 writes checkpoints, logs and metrics. A single process (no torchrun) runs none of the rank machinery.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from transformer.config import TrainingConfig
from transformer.device import resolve_device, tune_cpu_allocator


@dataclass
class Process:
    rank: int
    world: int  # processes in the group
    device: torch.device

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0


def setup_process(training: TrainingConfig) -> Process:
    """Process-wide settings, made once by the script that trains: threads, allocator, process group, seed.

    Each rank seeds seed + rank, so each draws its own dropout masks; DistributedDataParallel copies rank 0's initial
    weights to all of them."""
    if training.threads:
        torch.set_num_threads(training.threads)
    tune_cpu_allocator()
    device = resolve_device(training.device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        rank = dist.get_rank()
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    torch.manual_seed(training.seed + rank)
    if rank > 0:  # only rank 0 talks; the others report warnings and errors only
        logging.getLogger("transformer").setLevel(logging.WARNING)
    return Process(rank, world, device)


def broadcast_bytes(payload: bytes | None, world: int) -> bytes:
    """Rank 0's bytes on every rank (e.g. the tokenizer model it trained)."""
    if world == 1:
        return payload
    box = [payload]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_tensor_over_ranks(value: torch.Tensor, world: int) -> torch.Tensor:
    """The sum of `value` over all processes, on the device: nothing is read back to the host."""
    if world > 1:
        dist.all_reduce(value)
    return value


def sum_over_ranks(value: float, world: int, device: torch.device) -> float:
    return float(sum_tensor_over_ranks(torch.tensor([value], dtype=torch.float64, device=device), world).item())


def cleanup(world: int) -> None:
    if world > 1 and dist.is_initialized():
        dist.destroy_process_group()
