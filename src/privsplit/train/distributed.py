"""Where training runs: the device, and this process's place among ``torchrun`` processes."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from ..tensors import resolve_device  # re-exported: old imports name it here


class Distributed:
    """This process's place among ``torchrun`` processes (a single process if none)."""

    def __init__(self, device: torch.device) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.device = device
        if self.world > 1:
            if device.type == "cuda":
                self.device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(self.device)
            if not dist.is_initialized():
                dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def average(self, tensors: list[torch.Tensor]) -> None:
        """Average ``tensors`` in place across processes (one flat all-reduce)."""
        if self.world == 1 or not tensors:
            return
        flat = torch.cat([t.reshape(-1).float() for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            values = values.to(self.device)
            dist.all_reduce(values)
        return values.cpu()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def broadcast_module(self, module: nn.Module) -> None:
        if self.world > 1:
            for t in module.state_dict().values():
                dist.broadcast(t, 0)
