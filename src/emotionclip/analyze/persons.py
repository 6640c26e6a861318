"""Per-person analysis: each tracked person's own clip per window, scored apart from the others.

The usual analysis encodes a window with the union of all subject boxes, so one score stands for
everybody in the frame. With ``per_person`` every person the tracker follows (:mod:`emotionclip.detect.track`)
also gets the window's clip encoded with *that person's* mask only: the same frames, the person's
box alone as the subject (an empty mask in a frame where the person is not seen). A person is
scored for a window only when seen (a subject box, score above 0.5) in at least ``min_share`` of its
frames, so a track that flickers through a window or a passer-by seen for two frames is left out.

Ids: the persons scored somewhere in the video are numbered 1..K in order of first appearance
(the tracker's ids count in that order, with gaps where a track is never scored); in the output
the sixth column of every box carries these ids, and boxes of tracks never scored (still part
of the union mask) carry id 0.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the CLI imports this module for its defaults: `emotionclip --help` loads no torch
    import torch

DEFAULT_MIN_SHARE = 0.5
THUMBNAIL_HEIGHT = 64  # pixels of the crop shown at the start of a person's lane in the report
# person colours (matplotlib's Dark2), apart from the class colours (tab10): a person's box on the
# video, the frame of its thumbnail and its panel share one
PERSON_COLORS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666")


def person_color(person: int) -> str:
    return PERSON_COLORS[(int(person) - 1) % len(PERSON_COLORS)]


@dataclass(frozen=True)
class PerPerson:
    """Settings of the per-person analysis (``per_person=PerPerson(...)``; ``per_person=True`` = defaults).

    ``min_share``: a person is scored for a window when seen in at least this share of its frames.
    """

    min_share: float = DEFAULT_MIN_SHARE

    def __post_init__(self):
        if not 0 < self.min_share <= 1:
            raise ValueError(f"min_share must be in (0, 1], got {self.min_share}")


def as_per_person(value) -> PerPerson | None:
    """``per_person`` as given (False/None, True, a share, or :class:`PerPerson`) -> settings or None."""
    if value is None or value is False:
        return None
    if value is True:
        return PerPerson()
    if isinstance(value, PerPerson):
        return value
    raise TypeError(f"per_person must be a bool or a PerPerson, got {type(value).__name__}")


def window_persons(subject_boxes: list[np.ndarray], min_share: float) -> list[int]:
    """Track ids seen (a subject box) in at least ``min_share`` of a window's frames, ascending."""
    frames = len(subject_boxes)
    counts = Counter(int(t) for b in subject_boxes if b.shape[1] >= 6 for t in set(b[:, 5].tolist()))
    return sorted(t for t, n in counts.items() if t > 0 and n >= min_share * frames - 1e-9)


@dataclass
class PersonRows:
    """One row per (window, person): the window's clip encoded with that person's mask only."""

    window: np.ndarray  # [P] window index of the row
    person: np.ndarray  # [P] person id, 1..K in order of first appearance
    features: torch.Tensor  # [P, D] float32, un-normalised
    boxes: list[list[np.ndarray]]  # P x T x [0 or 1, 6]: the person's box per frame, source-video pixels
    thumbnails: dict[int, np.ndarray] = field(default_factory=dict)  # id -> RGB crop at its first row

    @property
    def ids(self) -> list[int]:
        return sorted(set(self.person.tolist()))

    def __len__(self) -> int:
        return len(self.window)


def renumber(original: list[int]) -> dict[int, int]:
    """Tracker ids of the scored persons -> 1..K; tracker ids count in order of first appearance."""
    return {t: k for k, t in enumerate(sorted(set(original)), start=1)}


def renumbered_boxes(boxes: np.ndarray, ids: dict[int, int]) -> np.ndarray:
    """Boxes with their track ids replaced by person ids; tracks never scored get 0."""
    if boxes.shape[1] < 6 or not len(boxes):
        return boxes
    out = boxes.copy()
    out[:, 5] = [ids.get(int(t), 0) for t in boxes[:, 5]]
    return out


def crop(frame: np.ndarray, box: np.ndarray, height: int = THUMBNAIL_HEIGHT) -> np.ndarray:
    """A small RGB crop of ``frame`` inside ``box`` (decode-size pixels), ``height`` pixels high."""
    from PIL import Image

    h, w = frame.shape[:2]
    x1, y1 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x2, y2 = int(np.clip(np.ceil(box[2]), x1 + 1, w)), int(np.clip(np.ceil(box[3]), y1 + 1, h))
    im = Image.fromarray(frame[y1:y2, x1:x2])
    scale = height / im.height
    return np.asarray(im.resize((max(1, round(im.width * scale)), height), Image.BILINEAR))
