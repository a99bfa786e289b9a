"""Distributed data parallel support for `torchrun --nproc-per-node N -m reactkd train ...`.

Each rank takes an interleaved shard of the epoch's permutation (padded so every rank runs the same number
of steps), the trained network is wrapped in DDP (frozen teachers are not), validation predictions are
gathered from all ranks, and only rank 0 writes files or prints progress.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, device_type: str) -> DistContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
        return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))

    def shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of `indices`, padded by wrapping so all ranks get the same count."""
        if not self.enabled:
            return indices
        per_rank = -(-len(indices) // self.world_size)
        padded = torch.cat([indices, indices[: per_rank * self.world_size - len(indices)]])
        return padded[self.rank::self.world_size]

    def gather(self, tensor: torch.Tensor, true_count: int) -> torch.Tensor:
        """Concatenate equally sized per-rank tensors in the original (interleaved) order, drop the padding."""
        if not self.enabled:
            return tensor
        parts = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(parts, tensor.contiguous())
        interleaved = torch.stack(parts, dim=1).flatten(0, 1)
        return interleaved[:true_count]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
