"""The subtitles beside a video (same stem, ``.vtt`` / ``.srt``), read only to show the spoken line in reports.

Language-tagged names (``VIDEO.en.srt``) count too. A stage may not import another, so this is a small reader of its own (``prepare`` has the full
parser that turns subtitles into training sentences). Unusable cues are skipped and counted, an
unreadable file gives no cues and a reason: a report never fails because of its subtitles.
"""

from __future__ import annotations

import glob
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

SUBTITLE_SUFFIXES = (".vtt", ".srt")

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>]*>|\{\\[^}]*\}")  # HTML-ish tags and SSA overrides ({\an8})
_MAX_CUE_S = 60.0  # a longer cue is a broken timing, not a line being said


@dataclass(frozen=True)
class SpokenLines:
    path: str | None
    cues: list[tuple[float, float, str]]  # (start, end, text) in seconds, sorted by start
    skipped: int = 0  # cues dropped as unusable (bad timing, no text)
    problem: str | None = None  # why the file gave nothing, if it did not


def _decode(raw: bytes) -> str:
    for bom, codec in (
        (b"\xff\xfe", "utf-16-le"),
        (b"\xfe\xff", "utf-16-be"),
        (b"\xef\xbb\xbf", "utf-8-sig"),
    ):
        if raw.startswith(bom):
            return raw[len(bom) :].decode(codec, errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")  # old SRTs are often Windows-1252


def _seconds(h, m, s, frac) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def parse_cues(text: str) -> tuple[list[tuple[float, float, str]], int]:
    """``(cues, skipped)`` of SRT or WebVTT text: a timing line, then text lines up to a blank line."""
    cues, skipped = [], 0
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _TIMING.match(lines[i])
        i += 1
        if not m:
            continue
        body = []
        while i < len(lines) and lines[i].strip() and not _TIMING.match(lines[i]):
            body.append(lines[i])
            i += 1
        start, end = _seconds(*m.groups()[:4]), _seconds(*m.groups()[4:])
        words = " ".join(html.unescape(_TAG.sub("", line)).strip() for line in body).split()
        if not (math.isfinite(start) and 0 <= start < end <= start + _MAX_CUE_S) or not words:
            skipped += 1
            continue
        cues.append((start, end, " ".join(words)))
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
            text = _decode(path.read_bytes())
        except OSError as e:
            return SpokenLines(str(path), [], problem=f"cannot read ({e.strerror or e})")
        cues, skipped = parse_cues(text)
        if not cues:
            return SpokenLines(str(path), [], skipped, problem="no usable cue")
        return SpokenLines(str(path), cues, skipped)
    return SpokenLines(None, [])
