"""torch.distributed under ``torchrun``: gloo on CPUs, NCCL on GPUs. One process without it."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


def setup() -> tuple[int, int, int]:
    """(rank, world size, local rank); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return dist.get_rank(), dist.get_world_size(), local


def teardown(finished: bool = True) -> None:
    """Destroy torchrun's process group, once, when the process's command ends (left alive, gloo's threads
    can abort a rank at interpreter exit: "terminate called without an active exception"). After a command
    that ``finished``, every rank first waits for the others at a barrier: a rank that destroyed the group
    while another was still talking to it aborted the same way (seen once in CI). Not after each
    training run: a group destroyed and initialised again in one process can hang (pytorch/pytorch#114585)."""
    if dist.is_available() and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def broadcast_floats(values: list[float], world: int, device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (float64)."""
    if world <= 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device if device.type == "cuda" else "cpu")
    dist.broadcast(t, 0)
    return [float(v) for v in t.tolist()]


def wrap(net: torch.nn.Module, world: int, local: int, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around a trainable network under torchrun; the network itself otherwise."""
    if world <= 1:
        return net
    return DistributedDataParallel(net, device_ids=[local] if device.type == "cuda" else None)
