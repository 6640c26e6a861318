"""torch.distributed set-up from the launcher's environment: torchrun first, then SLURM.

torchrun sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``. Under
``srun`` (one task per GPU) SLURM sets ``SLURM_PROCID``, ``SLURM_LOCALID`` and
``SLURM_STEP_NUM_TASKS``; ``MASTER_PORT`` defaults to one derived from ``SLURM_JOB_ID`` (two jobs on
one node do not collide) and ``MASTER_ADDR`` to 127.0.0.1 on one node; a multi-node batch script
exports ``MASTER_ADDR`` (README, "Multi-GPU and SLURM"). Backend: NCCL on CUDA, gloo on CPU.

Every collective the loop needs is here; each one is entered by every rank, and a failure on one
rank (bad input, NaN loss, a full disk on rank 0) is turned into the same exception on all of them
instead of leaving the others waiting until the collective timeout.
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
    if "SLURM_STEP_NUM_TASKS" in env and "SLURM_PROCID" in env:  # a task of an srun job step
        tasks = int(env["SLURM_STEP_NUM_TASKS"])
        return int(env.get("SLURM_LOCALID", 0)), int(env["SLURM_PROCID"]), tasks, "slurm"
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1:
        # the batch script itself (no srun): one process that would wait forever for 7 others
        raise ValueError(
            f"SLURM allocated {env['SLURM_NTASKS']} tasks but this process was not started by srun "
            "(no SLURM_STEP_NUM_TASKS): start one task per GPU with `srun python -m emotionclip train ...`, "
            "or one `torchrun` per node, as the README's SLURM recipe does"
        )
    return 0, 0, 1, "none"


def slurm_master_port(job_id: str) -> int:
    """A rendezvous port per job (15000-29999, below Linux's ephemeral range)."""
    return 15000 + int(job_id) % 15000


def cuda_index(local_rank: int, device_count: int) -> int:
    """The GPU of a process: SLURM may bind one GPU per task (each task sees only device 0)."""
    if device_count < 1:
        raise ValueError("device 'cuda' requested but no CUDA device is visible to this process")
    return local_rank % device_count


def resolve_device_type(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available on this machine")
    return requested


def init_distributed(device: str = "auto", timeout_min: int = 30, tf32: bool = True) -> DistEnv:
    """Initialise the process group when launched with several processes; else a single-process env."""
    device_type = resolve_device_type(device)
    local_rank, rank, world_size, launcher = world_info_from_env()
    if device_type == "cuda":
        index = cuda_index(local_rank, torch.cuda.device_count()) if world_size > 1 else None
        torch_device = torch.device("cuda", torch.cuda.current_device() if index is None else index)
        torch.cuda.set_device(torch_device)
        torch.backends.cuda.matmul.allow_tf32 = tf32  # fp32 matmuls on tensor cores (Ampere+)
        torch.backends.cudnn.allow_tf32 = tf32
    else:
        torch_device = torch.device("cpu")
    if world_size <= 1:
        return DistEnv(device=torch_device)

    if dist.is_initialized():  # the caller (a test, a notebook) set the group up already
        return DistEnv(dist.get_rank(), local_rank, dist.get_world_size(), torch_device)
    if launcher == "slurm":
        if "SLURM_JOB_ID" in os.environ:
            os.environ.setdefault("MASTER_PORT", str(slurm_master_port(os.environ["SLURM_JOB_ID"])))
        if os.environ.get("SLURM_STEP_NUM_NODES", os.environ.get("SLURM_NNODES")) == "1":
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    missing = [v for v in ("MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ValueError(
            f"{launcher} launch with {world_size} processes but {', '.join(missing)} not set; "
            "export them in the batch script (README, 'Multi-GPU and SLURM')"
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


def broadcast_object(obj, env: DistEnv, src: int = 0):
    """``obj`` of rank ``src`` on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


class RankFailure(RuntimeError):
    """Another rank failed; this one stops with it (the message names that rank and its error)."""


def raise_together(env: DistEnv, error: BaseException | None, what: str) -> None:
    """Every rank enters; if any failed ``what``, every rank raises: the failed ones their own
    error, the others a `RankFailure` naming the first failed rank and its error."""
    message = None if error is None else f"{type(error).__name__}: {error}"
    failures = [(r, m) for r, m in enumerate(all_gather_object(message, env)) if m]
    if error is not None:
        raise error
    if failures:
        rank, message = failures[0]
        raise RankFailure(f"rank {rank} failed {what}: {message}")


@dataclass(frozen=True)
class StepFlags:
    """What the ranks agree on before each step (see `exchange_step_flags`)."""

    all_have_batch: bool
    batch_sizes: tuple[int, int]  # (min, max) over the ranks that have a batch
    stop: bool  # a rank was asked to stop (SIGTERM / SIGUSR1)
    nonfinite_ranks: tuple[int, ...]  # ranks whose previous loss was NaN/inf
    loss: float | None  # this rank's previous loss
    extra: tuple[float, ...] = ()  # this rank's `extra` values, read in the same sync


def exchange_step_flags(
    env: DistEnv,
    batch_size: int | None,
    loss: torch.Tensor | None,
    stop: bool,
    extra: torch.Tensor | None = None,
) -> StepFlags:
    """One all-reduce (MAX) and one host read per step: does every rank have a next batch of the
    same size, was any rank asked to stop, and was the previous loss finite on every rank.

    The loss stays on the device until this read, so the step itself never waits for the GPU."""
    n = env.world_size
    head = [float(batch_size is None), float(batch_size or 0), -float(batch_size or 0), float(stop)]
    flags = torch.tensor(head + [0.0] * n, device=env.device)
    own_loss = torch.zeros(1, device=env.device)
    if loss is not None:
        flags[4 + env.rank] = (~torch.isfinite(loss)).float()
        own_loss = loss.detach().float().reshape(1)
    if env.distributed:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    own = [own_loss] if extra is None else [own_loss, extra.detach().float().reshape(-1)]
    values = torch.cat([flags, *own]).tolist()
    n_extra = 0 if extra is None else extra.numel()
    return StepFlags(
        all_have_batch=values[0] == 0.0,
        batch_sizes=(int(-values[2]), int(values[1])),
        stop=values[3] > 0,
        nonfinite_ranks=tuple(r for r in range(n) if values[4 + r] > 0),
        loss=None if loss is None else values[len(flags)],
        extra=tuple(values[len(flags) + 1 : len(flags) + 1 + n_extra]),
    )


def cleanup(env: DistEnv) -> None:
    if env.owns_group and dist.is_initialized():
        dist.destroy_process_group()
