"""torch.distributed set-up from the launcher's environment: torchrun first, then SLURM.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Under
``srun`` (one task per GPU) SLURM sets ``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NTASKS``;
the batch script must export ``MASTER_ADDR`` and ``MASTER_PORT`` (see notes/train_README.md).
Backend: NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    owns_group: bool = False  # this module created the process group (and so destroys it)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def world_info_from_env(environ: dict[str, str] | None = None) -> tuple[int, int, int, str]:
    """(local_rank, rank, world_size, launcher) read from torchrun or SLURM variables."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" in env and "RANK" in env:
        return int(env.get("LOCAL_RANK", 0)), int(env["RANK"]), int(env["WORLD_SIZE"]), "torchrun"
    if "SLURM_NTASKS" in env and "SLURM_PROCID" in env:
        return int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), "slurm"
    return 0, 0, 1, "none"


def resolve_device_type(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    return requested


def init_distributed(device: str = "auto", timeout_min: int = 30) -> DistEnv:
    """Initialise the process group when launched with several processes; else a single-process env."""
    device_type = resolve_device_type(device)
    local_rank, rank, world_size, launcher = world_info_from_env()
    if device_type == "cuda":
        torch_device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(torch_device)
    else:
        torch_device = torch.device("cpu")
    if world_size <= 1:
        return DistEnv(device=torch_device)

    if dist.is_initialized():  # the caller (a test, a notebook) set the group up already
        return DistEnv(dist.get_rank(), local_rank, dist.get_world_size(), torch_device)
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(
            f"{launcher} launch with {world_size} processes but {', '.join(missing)} not set; "
            "export them in the batch script (see notes/train_README.md)"
        )
    # torch's env:// init reads these; SLURM does not set them
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(
        backend=backend,
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(minutes=timeout_min),
        device_id=torch_device if backend == "nccl" else None,
    )
    logger.info(
        "rank %d/%d (local %d) on %s via %s, backend %s",
        rank,
        world_size,
        local_rank,
        torch_device,
        launcher,
        backend,
    )
    return DistEnv(rank, local_rank, world_size, torch_device, owns_group=True)


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def all_gather_object(obj, env: DistEnv) -> list:
    if not env.distributed:
        return [obj]
    out = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
