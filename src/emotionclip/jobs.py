"""The one way to run a batch job over many processes: prepare, evaluate, analyze and embed use it.

A job is a list of inputs every process builds the same way. :func:`current_part` gives this
process its slice: ``--part I/N`` (job arrays, 0-based as SLURM's ``--array=0-N``) combined with
the launcher's ranks (``torchrun``'s ``RANK`` / ``WORLD_SIZE``, ``srun``'s ``SLURM_PROCID`` /
``SLURM_NTASKS``): ``--part 2/4`` with 8 ranks is slice ``2 * 8 + rank`` of 32. Inputs are dealt
round-robin (``items[k::n]``), so the slices are deterministic and cover the list once. No process
group is needed: processes meet in the output folder, each part named ``part-I-of-N``
(:attr:`Part.name`) in its files. Each part writes one output per input (skipping those already
done, listing failures and going on) and its own summary; :func:`complete_set` lets the part that
completes the set merge them, one process at a time under the folder's parts lock.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

PARTS_LOCK = ".emotionclip.lock.parts"  # serialises "is the set complete? then merge" in a folder


@dataclass(frozen=True)
class Part:
    index: int  # 0-based
    count: int

    @property
    def name(self) -> str:
        return f"part-{self.index}-of-{self.count}"

    def select(self, items: Sequence) -> list:
        return list(items[self.index :: self.count])

    def siblings(self) -> list[Part]:
        """Every part of the job, this one included, in order."""
        return [Part(i, self.count) for i in range(self.count)]


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


@contextmanager
def parts_lock(folder: str | Path) -> Iterator[None]:
    """Held while a part decides whether it completes the set (and merges, if it does)."""
    from filelock import FileLock

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder / PARTS_LOCK)):
        yield


def complete_set(
    folder: str | Path, part: Part, is_done: Callable[[Part], bool], merge: Callable[[], T]
) -> T | None:
    """``merge()`` when every part of ``part``'s job ``is_done``, else None (a later part merges).

    Run by each part once its own outputs and summary are written: the last to finish finds the set
    complete. The check and the merge hold ``folder``'s parts lock, so two parts finishing at once
    never both merge, nor merge a set one of them is still writing."""
    with parts_lock(folder):
        missing = [p.name for p in part.siblings() if not is_done(p)]
        if missing:
            logger.info("%s done; the set completes when %s is", part.name, ", ".join(missing))
            return None
        return merge()


# ------------------------------------------------------------------ jobs of one output per input


def error_text(path: Path, error: Exception) -> str:
    """The failure as recorded: the message, starting with the input's path."""
    text = str(error) or type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


@dataclass(frozen=True)
class ItemJob:
    """What a job of one output per input does with each ``(input, target)``: ``clean`` what a killed
    run left for it, ``exists`` (its outputs are there: skipped unless overwriting), ``run`` (write
    the outputs; returns the input's ``done`` entry; raises on a bad input). ``key`` names the input
    in the summary's entries (``"video"``, ``"input"``)."""

    key: str
    clean: Callable[[Path, Path], None]
    exists: Callable[[Path, Path], bool]
    run: Callable[[Path, Path], dict]


def run_items(
    job: ItemJob, pairs: Sequence[tuple[Path, Path]], part: Part | None, settings: dict, overwrite: bool
) -> dict:
    """Run ``job`` over this part's slice of ``pairs`` (every ``(input, target)`` of the whole job, so
    that every part names each input's outputs alike): one failing input is logged and listed, the
    others go on. Returns this part's summary ``{"settings", "done", "skipped", "failed"}``."""
    from tqdm.auto import tqdm

    summary: dict = {"settings": settings, "done": [], "skipped": [], "failed": []}
    if part is not None:
        logger.info("%s: %d of %d inputs", part.name, len(part.select(pairs)), len(pairs))
        pairs = part.select(pairs)
    for source, target in tqdm(pairs, desc="inputs", unit="file"):
        job.clean(source, target)
        if not overwrite and job.exists(source, target):
            logger.info("%s: outputs already in %s, skipped (--overwrite to redo)", source, target)
            summary["skipped"].append({job.key: str(source), "out": str(target)})
            continue
        try:
            summary["done"].append(job.run(source, target))
        except Exception as e:  # one bad input never stops the batch
            logger.error("%s", error_text(source, e), exc_info=logger.isEnabledFor(logging.DEBUG))
            summary["failed"].append({job.key: str(source), "error": error_text(source, e)})
    return summary


def changed_settings(out: Path, settings: dict) -> dict[str, tuple]:
    """``{key: (before, now)}`` for each setting that differs from the one ``out/summary.json`` records
    (a rerun with other settings skips the items already done: their outputs keep the old ones)."""
    try:
        before = json.loads((Path(out) / "summary.json").read_text()).get("settings") or {}
    except (OSError, ValueError, AttributeError):
        return {}  # a first run, or a summary we cannot read: nothing to compare with
    now = json.loads(json.dumps(settings, default=str))
    return {
        k: (before.get(k), now.get(k)) for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)
    }


def warn_changed_settings(out: Path, settings: dict, overwrite: bool) -> None:
    """Log a warning when a rerun into ``out`` (without ``overwrite``) uses other settings."""
    changed = {} if overwrite else changed_settings(out, settings)
    if changed:
        logger.warning(
            "%s was written with other settings (%s): inputs done then are skipped and keep their old "
            "outputs; --overwrite (overwrite=True) redoes them, or write to another folder",
            out,
            "; ".join(f"{k}: {json.dumps(a)} -> {json.dumps(b)}" for k, (a, b) in changed.items()),
        )


def finish_items(out: Path, summary: dict, part: Part | None, inputs: Sequence, key: str) -> dict | None:
    """Write ``out/summary.json``; a part writes its own, and the part completing the set the whole
    job's (returned; None from the other parts)."""
    from ._io import atomic_write

    if part is None:
        _write_summary(out, summary)
        return summary
    atomic_write(part_summary_path(out, part), json.dumps(summary, indent=1))

    def merge() -> dict | None:
        merged = merge_part_summaries(out, part, [str(p) for p in inputs], key)
        if merged is not None:
            _write_summary(out, merged)
        return merged

    return complete_set(out, part, lambda p: part_summary_path(out, p).is_file(), merge)


def _write_summary(out: Path, summary: dict) -> None:
    from ._io import atomic_write

    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    failed = summary["failed"]
    logger.info(
        "%d done, %d skipped (outputs exist), %d failed; summary: %s",
        len(summary["done"]),
        len(summary["skipped"]),
        len(failed),
        out / "summary.json",
    )
    for item in failed:
        logger.error("failed: %s", item["error"])


def part_summary_path(out: Path, part: Part) -> Path:
    return Path(out) / f"summary.{part.name}.json"


def merge_part_summaries(out: Path, part: Part, order: Sequence[str], key: str) -> dict | None:
    """The whole job's summary once every part has written its own, else None.

    ``order``: every input of the whole job (as strings), to list entries in input order;
    ``key``: the entry field naming the input.
    """
    summaries = []
    for p in part.siblings():
        try:
            summaries.append(json.loads(part_summary_path(out, p).read_text()))
        except (OSError, ValueError):
            return None
    rank = {name: i for i, name in enumerate(order)}
    merged = {"settings": summaries[0]["settings"]}
    for field in ("done", "skipped", "failed"):
        entries = [e for s in summaries for e in s[field]]
        merged[field] = sorted(entries, key=lambda e: rank.get(e[key], len(rank)))
    return merged
