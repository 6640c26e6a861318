"""What every benchmark loader returns: samples to encode plus the entries it had to skip."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One thing to encode: a video clip (a time range) or an image.

    Boxes come from exactly one place: ``frame_boxes`` (per video frame number, BoLD's joints),
    ``box`` (one box in the coordinates of an image of size ``box_frame_size``, Emotic),
    ``detect=True`` (run the person detector on the sampled frames), or nowhere (empty mask).
    """

    key: str  # unique within its split; the feature cache is keyed by it
    path: str
    labels: dict[str, np.ndarray]
    kind: str = "video"  # "video" | "image"
    # the clip: video frames first_frame..last_frame (inclusive; None = the video's last), seen through
    # the model's T frames spread by np.linspace as the release does; or one instant (seconds)
    # whose frame is repeated T times (LIRIS-ACCEDE)
    first_frame: int = 0
    last_frame: int | None = None
    instant: float | None = None
    frame_boxes: dict[int, np.ndarray] | None = field(default=None, compare=False)
    box: tuple[float, float, float, float] | None = None
    box_frame_size: tuple[int, int] | None = None  # (width, height) that ``box`` refers to
    detect: bool = False
    group: str = ""  # e.g. the movie a LIRIS-ACCEDE second belongs to (for smoothing)


@dataclass
class Split:
    """A loaded benchmark split."""

    dataset: str
    split: str
    samples: list[Sample]
    skipped: list[dict[str, str]]  # {"key", "path", "reason"}
    class_names: dict[str, list[str]]  # label name -> column names (for tables and plots)

    def labels(self, name: str, keys: list[str] | None = None) -> np.ndarray:
        """Stack one label over the samples (or over ``keys``, in that order)."""
        if keys is None:
            return np.stack([np.asarray(s.labels[name]) for s in self.samples])
        by_key = {s.key: s for s in self.samples}
        return np.stack([np.asarray(by_key[k].labels[name]) for k in keys])


class SkipList:
    """Collects broken entries: each is logged once and listed in the run's summary."""

    def __init__(self, dataset: str, split: str):
        self.where = f"{dataset}/{split}"
        self.items: list[dict[str, str]] = []

    def add(self, key: str, path: str | Path, reason: str) -> None:
        logger.warning("%s: skipping %s: %s: %s", self.where, key, path, reason)
        self.items.append({"key": key, "path": str(path), "reason": reason})


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    return path


def find_first(root: Path, candidates: list[str], what: str) -> Path:
    """The first existing path among ``candidates`` (relative to root), or a clear error."""
    for c in candidates:
        p = root / c
        if p.exists():
            return p
    tried = ", ".join(candidates)
    raise FileNotFoundError(f"{root}: {what} not found (looked for {tried})")
