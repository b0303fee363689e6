"""Training the top on several processes and machines, launched by `torchrun`.

Every process loads the same data and model (the same seed gives the same head), fills its
share of the activation cache into the one store, and trains on its share of each batch;
their gradients are summed before each step, so every process takes the same step and the
model stays identical everywhere. Only process 0 goes on to export, gate and publish.

    torchrun --nproc_per_node 2 -m edgefreeze build PIPELINE        # one machine
    torchrun --nnodes 2 --node_rank R --master_addr HOST --master_port 29500 \\
        --nproc_per_node 8 -m edgefreeze build PIPELINE              # on each machine

Plain `edgefreeze build` is a world of one process, and none of this runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

Item = TypeVar("Item")


@dataclass(frozen=True)
class World:
    """This process's place among the processes that train together."""

    rank: int = 0
    size: int = 1

    @property
    def leader(self) -> bool:
        """The process that exports, gates and publishes (and reports progress)."""
        return self.rank == 0

    def share(self, items: Sequence[Item]) -> list[Item]:
        """This process's share of `items`: every size-th one, from its rank."""
        return list(items[self.rank :: self.size])

    def wait(self) -> None:
        """Until every process has got here (the cache is filled, say)."""
        if self.size > 1:
            dist.barrier()

    def sum(self, value: float) -> float:
        """`value` added up over all processes."""
        if self.size == 1:
            return value
        total = torch.tensor(value, dtype=torch.float64)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return float(total)

    def sum_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Add up the parameters' gradients over all processes, in place; a process with
        nothing in this batch takes part with zeros."""
        if self.size == 1:
            return
        for p in parameters:
            if p.requires_grad:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)


def join_world(device: torch.device) -> World:
    """The world torchrun started this process in (gloo on the CPU, nccl on CUDA), or a
    world of one."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    if device.type == "cuda":  # one GPU per process on each machine
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        # nccl for the CUDA gradients, gloo for the CPU-side sums (losses, barriers).
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return World(rank=dist.get_rank(), size=dist.get_world_size())
