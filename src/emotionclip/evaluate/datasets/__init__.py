"""Benchmark loaders: official files -> :class:`Split` (samples + skipped broken entries)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from . import bold, emotic, liris_accede, meld, moviegraphs
from .common import Sample, Split

LOADERS: dict[str, tuple[Callable[[Path, str], Split], tuple[str, ...]]] = {
    "bold": (bold.load, bold.SPLITS),
    "moviegraphs": (moviegraphs.load, moviegraphs.SPLITS),
    "meld": (meld.load, meld.SPLITS),
    "emotic": (emotic.load, emotic.SPLITS),
    "liris-accede": (liris_accede.load, liris_accede.SPLITS),
}
DATASETS = tuple(LOADERS)


def load_split(dataset: str, root: str | Path, split: str) -> Split:
    """Load one split of a benchmark from its official layout under ``root``."""
    if dataset not in LOADERS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: dataset root is not a directory")
    loaded = LOADERS[dataset][0](root, split)
    keys = [s.key for s in loaded.samples]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"{root}: {dataset}/{split} lists the entry {dup!r} more than once")
    return loaded


__all__ = ["DATASETS", "LOADERS", "Sample", "Split", "load_split"]
