"""Splitting a batch job over processes: ``--part I/N`` (job arrays) and ``torchrun`` ranks.

Inputs are dealt round-robin (``items[k::n]``) from the list every process builds the same way, so
each process gets a deterministic slice and together they cover it once. Under ``torchrun`` (or
SLURM ``srun``) ``RANK`` / ``WORLD_SIZE`` split each part further: ``--part 2/4`` with 8 ranks is
slice ``2 * 8 + rank`` of 32. ``I`` is 0-based, as in ``emotionclip prepare --part`` and SLURM's
``--array=0-N``. No process group is needed: processes meet in the output folder.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Part:
    index: int  # 0-based
    count: int

    @property
    def name(self) -> str:
        return f"part-{self.index}-of-{self.count}"

    def select(self, items: Sequence) -> list:
        return list(items[self.index :: self.count])


def parse_part(text: str) -> Part:
    """``"I/N"`` with ``0 <= I < N`` (e.g. ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``) -> :class:`Part`."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
        raise ValueError(f"--part must be I/N with 0 <= I < N, got {text!r}")
    return Part(int(m.group(1)), int(m.group(2)))


def _env_rank() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")) or 1)
    rank = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", "0")) or 0)
    return (rank, world) if world > 1 else (0, 1)


def current_part(part: str | Part | None = None) -> Part | None:
    """This process's slice: ``part`` combined with the launcher's rank; None for a whole, single job."""
    base = parse_part(part) if isinstance(part, str) else (part or Part(0, 1))
    rank, world = _env_rank()
    combined = Part(base.index * world + rank, base.count * world)
    return None if combined.count == 1 else combined


def rank_device(device: str) -> str:
    """A bare ``cuda`` -> this process's own GPU when a launcher runs several (``LOCAL_RANK`` of
    torchrun, ``SLURM_LOCALID`` of srun, modulo the visible GPUs): one process per GPU. Anything
    else (``cpu``, ``cuda:1``) as given."""
    if str(device) != "cuda" or _env_rank()[1] == 1:
        return str(device)
    import torch

    local = int(os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0")) or 0)
    return f"cuda:{local % max(torch.cuda.device_count(), 1)}"


def part_summary_path(out: Path, part: Part) -> Path:
    return Path(out) / f"summary.{part.name}.json"


def merge_part_summaries(out: Path, part: Part, order: Sequence[str], key: str) -> dict | None:
    """The whole job's summary once every part has written its own, else None.

    ``order``: every input of the whole job (as strings), to list entries in input order;
    ``key``: the entry field naming the input. The last part to finish does the merge.
    """
    summaries = []
    for i in range(part.count):
        path = part_summary_path(out, Part(i, part.count))
        try:
            summaries.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None
    rank = {name: i for i, name in enumerate(order)}
    merged = {"settings": summaries[0]["settings"]}
    for field in ("done", "skipped", "failed"):
        entries = [e for s in summaries for e in s[field]]
        merged[field] = sorted(entries, key=lambda e: rank.get(e[key], len(rank)))
    return merged
