"""Candidate clips: one per sentence, kept by the release's thresholds (all configurable).

The release's thresholds are the defaults: clips of more than 2 s and less than 10 s with at least
8 frames at 8 fps, neutral probability <= 0.05, and every clip kept whatever its share of frames
with a person (``has_person`` is stored, so training can filter on it).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from ..constants import BOX_SCORE_THRESHOLD
from .subtitles import Sentence

FRAME_GRIDS = ("video", "release", "clip")


@dataclass(frozen=True)
class ClipFilter:
    min_duration: float = 2.0  # seconds, exclusive
    max_duration: float = 10.0  # seconds, exclusive
    min_chars: int = 3
    min_frames: int = 8  # T frames at `fps` must exist
    fps: float = 8.0
    max_neutral: float | None = 0.05  # keep clips with neutral probability <= this; None keeps all
    min_person_fraction: float = (
        0.0  # keep clips with at least this share of frames with a person (release: 0)
    )
    person_score: float = BOX_SCORE_THRESHOLD  # a box counts as a person above this score

    def to_dict(self) -> dict:
        return asdict(self)

    # "video": the frames n / fps of the whole video with ceil(start·fps) <= n <= floor(end·fps), the
    # frame numbers create_index.py takes; "release": the same numbers n, showing t = (n - 1) / fps as
    # the release's ffmpeg dump (files numbered from 1) does; "clip": start + k / fps inside [start, end)
    frame_grid: str = "video"
    # a sentence running past the video's end: "cut" at the end, or "drop" it as create_index.py does
    # (its frames are not all in the dump)
    past_end: str = "cut"

    def __post_init__(self):
        if self.frame_grid not in FRAME_GRIDS:
            raise ValueError(f"frame_grid must be one of {FRAME_GRIDS}, got {self.frame_grid!r}")
        if self.past_end not in ("cut", "drop"):
            raise ValueError(f"past_end must be 'cut' or 'drop', got {self.past_end!r}")

    def frame_range(self, start: float, end: float) -> tuple[float, float, int]:
        """``(first instant, exclusive end, number of frames)`` of a clip's stored frames."""
        if self.frame_grid == "clip":
            return start, end, max(0, math.ceil((end - start) * self.fps - 1e-6))
        first, last = math.ceil(start * self.fps - 1e-6), math.floor(end * self.fps + 1e-6)
        if self.frame_grid == "release":
            if first < 1:  # the dump has no file 0: create_index.py drops such a clip
                return 0.0, 0.0, 0
            return (first - 1) / self.fps, (last - 0.5) / self.fps, max(0, last - first + 1)
        return first / self.fps, (last + 0.5) / self.fps, max(0, last - first + 1)


@dataclass(frozen=True)
class Candidate:
    index: int  # position of the sentence in the video's subtitles
    start: float
    end: float
    text: str


def select_candidates(
    sentences: Sequence[Sentence], video_duration: float, rules: ClipFilter, stats: Counter
) -> list[Candidate]:
    """Sentences that can become clips, by text and timing alone (before decoding anything).

    A sentence running past the end of the video is cut at the end (``past_end="drop"``: dropped,
    as the release); one starting after it is dropped. ``stats`` counts each reason a sentence is dropped, and ``sentences``.
    """
    out = []
    for k, s in enumerate(sentences):
        stats["sentences"] += 1
        start, end = max(0.0, s.start), min(s.end, video_duration)
        if end <= start:
            stats["outside_video"] += 1
        elif s.end > video_duration and rules.past_end == "drop":
            stats["past_video_end"] += 1
        elif len(s.text.strip()) < rules.min_chars:
            stats["too_few_chars"] += 1
        elif end - start <= rules.min_duration:
            stats["too_short"] += 1
        elif end - start >= rules.max_duration:
            stats["too_long"] += 1
        elif rules.frame_range(start, end)[2] < rules.min_frames:
            stats["too_few_frames"] += 1
        else:
            out.append(Candidate(k, start, end, s.text.strip()))
    return out
