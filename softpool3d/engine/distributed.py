"""torch.distributed set-up for scripts launched plainly or with torchrun."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Context:
    """Join the process group torchrun describes (WORLD_SIZE > 1): nccl on GPU, gloo on CPU.

    ``device`` is auto, cpu or cuda; with cuda each process takes the GPU of its LOCAL_RANK.
    """
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Context(rank, world_size, torch_device)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order (a one-item list without a process group)."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over the ranks."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
