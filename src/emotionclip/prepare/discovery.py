"""Find the (video, subtitle) pairs to prepare.

INPUT is a folder (searched recursively), one video file, or a manifest: a CSV / JSONL table with
a ``video`` column (alias ``path`` / ``name``; relative to the manifest, the extension may be left
out) and either ``subtitle`` (a subtitle file) or ``text`` (alias ``transcript``; one cue spanning
``start``..``end``, default the whole video, e.g. CREMA-D's ``transcript.csv``). A video without a
subtitle file beside it may carry a text subtitle track inside its container.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import av

from ..video_io import VIDEO_EXTENSIONS
from .subtitles import SUBTITLE_EXTENSIONS, Cue, SubtitleError, clean_text

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
# subtitle codecs whose packets are text (image subtitles such as PGS/DVD cannot be read as words)
TEXT_SUBTITLE_CODECS = {"subrip", "srt", "webvtt", "mov_text", "ass", "ssa", "text"}
_PREFERRED_LANGS = ("en", "eng", "en-us", "en-gb", "english")


@dataclass
class VideoItem:
    """One video to prepare and where its words come from."""

    video: Path
    video_id: str  # stable, unique, safe as a WebDataset key prefix (no dots)
    subtitle: Path | None = None  # sidecar file
    subtitle_stream: int | None = None  # index of an embedded text subtitle stream
    cues: list[Cue] | None = field(default=None)  # given inline by a manifest
    error: str | None = None  # found in the input but unusable (reported, not processed)

    @property
    def source(self) -> str:
        if self.subtitle is not None:
            return str(self.subtitle)
        if self.subtitle_stream is not None:
            return f"{self.video}#stream{self.subtitle_stream}"
        return "manifest text" if self.cues is not None else "none"


def make_video_id(rel: str) -> str:
    """Readable, deterministic id: the relative path made key-safe plus a short hash of it."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(rel).with_suffix("")))[-80:].strip("_")
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"


def find_sidecar(video: Path) -> Path | None:
    """``name.srt`` / ``name.vtt`` / ``name.json`` beside the video, or ``name.<lang>.<ext>``
    (English preferred)."""
    for ext in SUBTITLE_EXTENSIONS:
        exact = video.with_suffix(ext)
        if exact.is_file():
            return exact
    tagged = sorted(
        p
        for p in video.parent.glob(f"{glob_escape(video.stem)}.*.*")
        if p.suffix.lower() in SUBTITLE_EXTENSIONS and not p.name.endswith(".info.json")  # yt-dlp metadata
    )
    if not tagged:
        return None
    for lang in _PREFERRED_LANGS:
        for p in tagged:
            if Path(p.stem).suffix.lower().lstrip(".") == lang:
                return p
    return tagged[0]


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def embedded_text_subtitle(video: Path) -> int | None:
    """Index of the first text subtitle stream in the container (English preferred), if any."""
    try:
        with av.open(str(video), metadata_errors="ignore") as container:
            streams = [s for s in container.streams.subtitles if s.codec_context.name in TEXT_SUBTITLE_CODECS]
            if not streams:
                return None
            english = [s for s in streams if (s.metadata.get("language") or "").lower() in _PREFERRED_LANGS]
            return (english or streams)[0].index
    except av.error.FFmpegError:
        return None  # the pipeline reports the unreadable video when it probes it


def read_embedded_cues(video: Path, stream_index: int) -> list[Cue]:
    """Cues of a text subtitle stream, read from its packets (no video decoding)."""
    with av.open(str(video), metadata_errors="ignore") as container:
        stream = container.streams[stream_index]
        codec = stream.codec_context.name
        cues = []
        for packet in container.demux(stream):
            if packet.pts is None or not packet.size:
                continue
            start = float(packet.pts * stream.time_base)
            end = start + float((packet.duration or 0) * stream.time_base)
            text = bytes(packet).decode("utf-8", errors="replace")
            if codec == "mov_text":  # 16-bit length prefix, then the text (then style boxes)
                n = int.from_bytes(bytes(packet)[:2], "big")
                text = bytes(packet)[2 : 2 + n].decode("utf-8", errors="replace")
            elif codec in ("ass", "ssa"):  # ReadOrder,Layer,Style,Name,MarginL,MarginR,MarginV,Effect,Text
                text = text.split(",", 8)[-1]
            cues.append(Cue(start, end, text))
    if not cues:
        raise SubtitleError(f"{video}#stream{stream_index}", f"embedded {codec} subtitle track has no cues")
    return cues


def _item_for_video(video: Path, root: Path) -> VideoItem:
    rel = video.relative_to(root).as_posix() if video.is_relative_to(root) else video.name
    item = VideoItem(video=video, video_id=make_video_id(rel))
    item.subtitle = find_sidecar(video)
    if item.subtitle is None:
        item.subtitle_stream = embedded_text_subtitle(video)
        if item.subtitle_stream is None:
            item.error = "no subtitle: no .srt/.vtt/.json beside it and no text subtitle track inside"
    return item


def _resolve_video(name: str, base: Path) -> Path | None:
    path = Path(name) if Path(name).is_absolute() else base / name
    if path.is_file():
        return path
    if not path.suffix or path.suffix.lower() not in VIDEO_EXTENSIONS:  # CREMA-D names have no extension
        for ext in VIDEO_EXTENSIONS:
            candidate = path.with_name(path.name + ext)
            if candidate.is_file():
                return candidate
    return None


def _first(row: dict, *keys: str) -> str | None:
    for k in keys:
        v = row.get(k)
        if v is not None and str(v).strip() != "":
            return str(v).strip()
    return None


def read_manifest(path: Path) -> list[VideoItem]:
    """Items of a CSV/JSONL manifest; rows naming a missing video become reported errors."""
    base = path.parent
    try:
        if path.suffix.lower() == ".jsonl":
            with path.open(encoding="utf-8") as f:
                rows = [json.loads(line) for line in f if line.strip()]
        else:
            with path.open(newline="", encoding="utf-8-sig") as f:
                rows = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read manifest ({e})") from e
    if not rows:
        raise ValueError(f"{path}: manifest has no rows")
    if _first(rows[0], "video", "path", "name") is None:
        raise ValueError(
            f"{path}: manifest needs a 'video' (or 'path' / 'name') column, got {sorted(rows[0])}"
        )
    items = []
    for k, row in enumerate(rows):
        row = {str(key).strip().lower(): v for key, v in row.items()}
        name = _first(row, "video", "path", "name")
        if name is None:
            continue
        video = _resolve_video(name, base)
        item = VideoItem(video=video or base / name, video_id=make_video_id(name))
        if video is None:
            item.error = f"video not found (manifest {path.name}, row {k + 1})"
            items.append(item)
            continue
        subtitle = _first(row, "subtitle", "subtitles", "srt", "vtt")
        text = _first(row, "text", "transcript", "utterance", "sentence")
        if subtitle is not None:
            item.subtitle = Path(subtitle) if Path(subtitle).is_absolute() else base / subtitle
        elif text is not None:
            start = float(_first(row, "start") or 0.0)
            end = _first(row, "end")
            # end = inf: the pipeline clamps the cue to the video's duration
            item.cues = [Cue(start, float(end) if end is not None else float("inf"), clean_text(text))]
        else:
            item.subtitle = find_sidecar(video)
            item.subtitle_stream = None if item.subtitle else embedded_text_subtitle(video)
            if item.subtitle is None and item.subtitle_stream is None:
                item.error = "no subtitle: manifest row has no subtitle/text and none was found"
        items.append(item)
    return items


def discover(input_path: str | Path) -> list[VideoItem]:
    """All items under INPUT, sorted by video id (so ``--part`` slices are deterministic)."""
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_file() and root.suffix.lower() in MANIFEST_EXTENSIONS:
        items = read_manifest(root)
    elif root.is_file():
        items = [_item_for_video(root, root.parent)]
    else:
        videos = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        items = [_item_for_video(v, root) for v in videos]
    seen: dict[str, int] = {}
    for item in items:  # the same video listed twice in a manifest: keep ids unique
        n = seen.get(item.video_id, 0)
        seen[item.video_id] = n + 1
        if n:
            item.video_id = f"{item.video_id}_{n}"
    logger.info("%s: found %d videos", root, len(items))
    return sorted(items, key=lambda it: it.video_id)
