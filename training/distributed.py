"""Multi-GPU with torchrun: one process per GPU, DistributedDataParallel, rank 0 logs and saves.

Without torchrun (WORLD_SIZE unset or 1) everything here is a no-op and training is one plain process.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from sightline.model.device import resolve_device


@dataclass(frozen=True)
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
    def from_env(cls, env: Mapping[str, str]) -> DistContext:
        """torchrun's variables; read at the CLI edge and passed down."""
        return cls(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))

    def device(self, requested: str) -> torch.device:
        """One GPU per process (cuda:LOCAL_RANK) under torchrun; otherwise what ``--device`` asks for."""
        device = resolve_device(requested)
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    rank=self.rank, world_size=self.world_size)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def sum_(self, tensors: list[torch.Tensor]) -> None:
        if self.enabled:
            for t in tensors:
                dist.all_reduce(t, op=dist.ReduceOp.SUM)

    def gather_objects(self, obj: Any) -> list[Any]:
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

