"""The subtitles beside a video (same stem, ``.vtt`` / ``.srt``), read only to show the spoken line in reports.

Language-tagged names (``VIDEO.en.srt``) count too. The file is read by the core's reader
(:mod:`emotionclip.subtitles`, prepare's too); here its cues are cleaned for display. Unusable cues
are skipped and counted, an unreadable file gives no cues and a reason: a report never fails
because of its subtitles.
"""

from __future__ import annotations

import glob
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..subtitles import decode_subtitle_bytes, parse_timed_blocks

SUBTITLE_SUFFIXES = (".vtt", ".srt")

_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # HTML-ish tags and SSA overrides ({\an8})
_MAX_CUE_S = 60.0  # a longer cue is a broken timing, not a line being said


@dataclass(frozen=True)
class SpokenLines:
    path: str | None
    cues: list[tuple[float, float, str]]  # (start, end, text) in seconds, sorted by start
    skipped: int = 0  # cues dropped as unusable (bad timing, no text)
    problem: str | None = None  # why the file gave nothing, if it did not


def parse_cues(text: str) -> tuple[list[tuple[float, float, str]], int]:
    """``(cues, skipped)`` of SRT or WebVTT text (a header is not required): markup removed, cues
    without words or with an impossible timing skipped."""
    cues, skipped = [], 0
    for cue in parse_timed_blocks(text):
        words = " ".join(html.unescape(_TAG.sub("", line)).strip() for line in cue.text.splitlines()).split()
        if not (math.isfinite(cue.start) and 0 <= cue.start < cue.end <= cue.start + _MAX_CUE_S) or not words:
            skipped += 1
            continue
        cues.append((cue.start, cue.end, " ".join(words)))
    return sorted(cues), skipped


def subtitle_files(video: str | Path) -> list[Path]:
    """``VIDEO.vtt``, ``VIDEO.srt``, then language-tagged ones (``VIDEO.en.srt``), those that exist."""
    video = Path(video)
    exact = [video.with_suffix(s) for s in SUBTITLE_SUFFIXES]
    tagged = sorted(
        p
        for s in SUBTITLE_SUFFIXES
        for p in video.parent.glob(f"{glob.escape(video.stem)}.*{s}")
        if p not in exact
    )
    return [p for p in exact + tagged if p.is_file()]


def spoken_lines(video: str | Path) -> SpokenLines:
    """The cues of the first subtitle file beside ``video`` (:func:`subtitle_files`); none without one."""
    for path in subtitle_files(video):
        try:
            text = decode_subtitle_bytes(path.read_bytes())
        except OSError as e:
            return SpokenLines(str(path), [], problem=f"cannot read ({e.strerror or e})")
        cues, skipped = parse_cues(text)
        if not cues:
            return SpokenLines(str(path), [], skipped, problem="no usable cue")
        return SpokenLines(str(path), cues, skipped)
    return SpokenLines(None, [])
