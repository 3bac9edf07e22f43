"""torchrun: this process's rank and world, the device, and the reductions training needs.

Run alone, a process is rank 0 of 1 and every method is a no-op. Under torchrun each
process trains on its shard of every epoch and only rank 0 writes files.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import TrainConfig


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA, then Apple's MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    found = {"cuda": torch.cuda.device_count(), "mps": int(torch.backends.mps.is_available())}
    if device.type in found and (device.index or 0) >= found[device.type]:
        have = ", ".join(["cpu"] + [f"{k} ({n})" for k, n in found.items() if n])
        raise ConfigError(
            f"--device {name}: torch {torch.__version__} sees no such device here; it has "
            f"{have}. Use --device auto (the best there is) or cpu."
        )
    return device


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun job (rank 0 of 1 when run alone)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        """Only the main process writes files and prints."""
        return self.rank == 0

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """All-reduce (sum) ``t`` across processes, in place."""
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def identical(self, module: torch.nn.Module) -> bool:
        """True when every process holds exactly the same parameters and buffers."""
        if self.world == 1:
            return True
        flat = torch.cat([t.detach().double().flatten() for t in module.state_dict().values()])
        gathered = [torch.empty_like(flat) for _ in range(self.world)]
        torch.distributed.all_gather(gathered, flat)
        return all(torch.equal(g, gathered[0]) for g in gathered)

    def sync_buffers(self, module: torch.nn.Module) -> None:
        """Give every process rank 0's buffers (batch-norm statistics)."""
        if self.world > 1:
            for buf in module.buffers():
                torch.distributed.broadcast(buf, 0)


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the torchrun job described by the environment, if any; pick the device."""
    device = resolve_device(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(), device
    import torch.distributed as td

    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not td.is_initialized():
        td.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Dist(td.get_rank(), td.get_world_size()), device


def scaled_lr(cfg: TrainConfig, processes: int) -> TrainConfig:
    """``cfg`` with the learning rate the optimiser runs at: times the processes with
    ``scale_lr: linear``. The run records ``cfg`` as given, so a rerun scales it once."""
    return dataclasses.replace(cfg, lr=cfg.lr * processes) if cfg.scale_lr == "linear" else cfg
