"""Subtitle files -> timed cues: the one reader of SRT, WebVTT and YouTube transcript JSON.

``prepare`` turns the cues into training sentences (:mod:`emotionclip.prepare.subtitles`);
``analyze`` shows the spoken line in its reports (:mod:`emotionclip.analyze.subtitles`). Text is
decoded from the encoding its BOM names (UTF-8/16/32), else UTF-8, else Windows-1252.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ._io import FileError

SUBTITLE_EXTENSIONS = (".srt", ".vtt", ".json")


class SubtitleError(FileError, ValueError):
    """A subtitle file could not be used. The message starts with the file and says why."""


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[.,](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}(.*)$")


def _seconds(h: str | None, m: str, s: str, frac: str) -> float:
    return int(h or 0) * 3600 + int(m) * 60 + int(s) + int(frac.ljust(3, "0")) / 1000.0


def parse_timed_blocks(text: str) -> list[Cue]:
    """Cues of SRT/VTT text: a timing line followed by text lines up to a blank line."""
    cues: list[Cue] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _TIMING.match(lines[i])
        i += 1
        if not m:
            continue
        g = m.groups()
        start, end = _seconds(*g[0:4]), _seconds(*g[4:8])
        body = []
        while i < len(lines) and lines[i].strip() and not _TIMING.match(lines[i]):
            body.append(lines[i])
            i += 1
        cues.append(Cue(start, end, "\n".join(body)))
    return cues


def parse_srt(text: str) -> list[Cue]:
    return parse_timed_blocks(text)


def parse_vtt(text: str) -> list[Cue]:
    # NOTE/STYLE/REGION blocks have no timing line, so the block parser never picks them up;
    # cue settings after the end time (``line:80%``) are discarded by the timing regex.
    if not text.lstrip("\ufeff").startswith("WEBVTT"):
        raise ValueError("not a WebVTT file (it must start with 'WEBVTT')")
    return parse_timed_blocks(text)


def parse_youtube_json(text: str) -> list[Cue]:
    """YouTube transcript JSON: ``[{"text", "start", "duration"}, ...]`` (youtube-transcript-api)."""
    data = json.loads(text)
    if isinstance(data, dict):  # some exporters wrap the list
        data = data.get("transcript") or data.get("segments") or data.get("events")
    if not isinstance(data, list):
        raise ValueError('expected a JSON list of {"text", "start", "duration"} objects')
    cues = []
    for k, item in enumerate(data):
        try:
            start = float(item["start"])
            end = float(item["end"]) if "end" in item else start + float(item["duration"])
            cues.append(Cue(start, end, str(item["text"])))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"entry {k} is not a {{text, start, duration}} object ({e!r})") from e
    return cues


def parse_subtitles(text: str, fmt: str) -> list[Cue]:
    parsers = {"srt": parse_srt, "vtt": parse_vtt, "json": parse_youtube_json}
    if fmt not in parsers:
        raise ValueError(f"unknown subtitle format {fmt!r} (known: {', '.join(parsers)})")
    return parsers[fmt](text)


_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


def decode_subtitle_bytes(raw: bytes) -> str:
    """Text of a subtitle file: the encoding its BOM names, else UTF-8, else Windows-1252 (old SRTs)."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw.decode(codec, errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def unreadable_char(ch: str) -> bool:
    """Undecodable, or a control character no subtitle holds."""
    return ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in "\t\n\r\f\v")


def _unreadable_share(text: str) -> float:
    return sum(map(unreadable_char, text)) / max(1, len(text))


def load_subtitles(path: str | Path) -> list[Cue]:
    """Raw cues of a ``.srt`` / ``.vtt`` / YouTube ``.json`` file; :class:`SubtitleError` if unusable."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise SubtitleError(path, f"cannot read ({e.strerror or e})") from e
    text = decode_subtitle_bytes(raw)
    if not text.strip():
        raise SubtitleError(path, "empty subtitle file")
    try:
        cues = parse_subtitles(text, fmt)
    except (ValueError, json.JSONDecodeError) as e:
        raise SubtitleError(path, str(e)) from e
    if _unreadable_share(text) > 0.01:  # random bytes after a valid header, a binary file renamed
        raise SubtitleError(path, "binary data, not subtitle text (control or undecodable characters)")
    if not cues:
        raise SubtitleError(path, f"no timed cues found (not a valid {fmt.upper()} file?)")
    return cues
