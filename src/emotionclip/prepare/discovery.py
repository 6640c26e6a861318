"""Find the (video, subtitle) pairs to prepare.

INPUT is a folder (searched recursively), one video file, or a manifest: a CSV / JSONL table with
a ``video`` column (alias ``path`` / ``name``; relative to the manifest, the extension may be left
out) and either ``subtitle`` (a subtitle file) or ``text`` (alias ``transcript``; one cue spanning
``start``..``end``, default the whole video, e.g. CREMA-D's ``transcript.csv``). A video without a
subtitle file beside it may carry a text subtitle track inside its container.

A video is identified by its content and its source path (:func:`identify`): a second folder whose
``a.mp4`` differs from the first one's is a new video, not one already done.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import av

from .._io import input_files
from ..subtitles import SUBTITLE_EXTENSIONS, Cue, SubtitleError
from ..video_io import VIDEO_EXTENSIONS
from .subtitles import clean_text

logger = logging.getLogger(__name__)

MANIFEST_EXTENSIONS = (".csv", ".jsonl")
# subtitle codecs whose packets are text (image subtitles such as PGS/DVD cannot be read as words)
TEXT_SUBTITLE_CODECS = {"subrip", "srt", "webvtt", "mov_text", "ass", "ssa", "text"}
_PREFERRED_LANGS = ("en", "eng", "en-us", "en-gb", "english")


@dataclass
class VideoItem:
    """One video to prepare and where its words come from."""

    video: Path
    video_id: str  # stable, unique, safe as a WebDataset key prefix (no dots); see identify()
    subtitle: Path | None = None  # sidecar file
    subtitle_stream: int | None = None  # index of an embedded text subtitle stream
    cues: list[Cue] | None = field(default=None)  # given inline by a manifest
    error: str | None = None  # found in the input but unusable (reported, not processed)
    key: str = ""  # the name it was found under (relative path, or the manifest's entry): sort order
    youtube_id: str | None = None  # given by a manifest column; else read from the file name
    notes: list[str] = field(default_factory=list)  # worth telling the user (paths outside the manifest)

    @property
    def source(self) -> str:
        if self.subtitle is not None:
            return str(self.subtitle)
        if self.subtitle_stream is not None:
            return f"{self.video}#stream{self.subtitle_stream}"
        return "manifest text" if self.cues is not None else "none"


def make_video_id(rel: str) -> str:
    """Readable, deterministic id: the relative path made key-safe plus a short hash of it."""
    # 60 characters: USTAR member names hold 100, with the hash and "__cNNNN.fNNN.jpg" after it
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", str(Path(rel).with_suffix("")))[-60:].strip("_")
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:6]}"


FINGERPRINT_BYTES = 1 << 20


def fingerprint(path: Path) -> str:
    """Size and a hash of the first and last MiB: tells re-encoded or replaced files apart without
    reading whole videos."""
    size = path.stat().st_size
    h = hashlib.sha1(str(size).encode())
    with path.open("rb") as f:
        h.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            h.update(f.read(FINGERPRINT_BYTES))
    return f"{size}:{h.hexdigest()[:16]}"


def _cached_fingerprint(path: Path, cache: dict[str, str] | None) -> str:
    if cache is None:
        return fingerprint(path)
    st = path.stat()  # unchanged size and mtime: the file was not rewritten since it was hashed
    key = f"{os.path.abspath(path)}\0{st.st_size}\0{st.st_mtime_ns}"
    if key not in cache:
        cache[key] = fingerprint(path)
    return cache[key]


def identify(items: list[VideoItem], cache: dict[str, str] | None = None) -> None:
    """Give each item its id from its content and absolute path (``stem-HASH``), unique in the list.

    ``cache`` (path, size, mtime → fingerprint) spares a resumed run re-reading every video."""
    seen: dict[str, int] = {}
    for item in items:
        stem = make_video_id(item.key or item.video.name).rsplit("-", 1)[0]
        try:
            content = _cached_fingerprint(item.video, cache) if item.error is None else "unreadable"
        except OSError as e:
            item.error = item.error or f"cannot read ({e.strerror or e})"
            content = "unreadable"
        words = repr(item.cues) if item.cues is not None else item.source
        source = f"{os.path.abspath(item.video)}\0{content}\0{words}"
        item.video_id = f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:10]}"
        n = seen.get(item.video_id, 0)  # one video listed twice in a manifest, with the same words
        seen[item.video_id] = n + 1
        if n:
            item.video_id = f"{item.video_id}_{n}"


_YOUTUBE_ID = re.compile(r"[A-Za-z0-9_-]{11}")


def youtube_ids(item: VideoItem) -> set[str]:
    """The YouTube ids an item may carry: a manifest's ``youtube_id``, or the file name as the
    release (``ID&...``), youtube-dl/yt-dlp (``Title [ID]``, ``Title-ID``) or users (``ID``) write it."""
    if item.youtube_id:
        return {item.youtube_id}
    stem = item.video.stem
    found = {stem.split("&")[0], stem[-11:]}
    found |= set(re.findall(r"\[([A-Za-z0-9_-]{11})\]", stem))
    return {x for x in found if _YOUTUBE_ID.fullmatch(x)}


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
    item = VideoItem(video=video, video_id=make_video_id(rel), key=rel)
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


def _manifest_rows(path: Path) -> list[tuple[int, dict | str]]:
    """``(line number, row)``; a row that cannot be parsed is the error message instead."""
    if path.suffix.lower() == ".jsonl":
        rows = []
        with path.open(encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    rows.append((n, f"not valid JSON ({e})"))
                    continue
                rows.append(
                    (n, row if isinstance(row, dict) else f"expected a JSON object, got {type(row).__name__}")
                )
        return rows
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return [(reader.line_num, row) for row in reader]


def _number(row: dict, key: str, default: float, where: str) -> float:
    value = _first(row, key)
    if value is None:
        return default
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{where}: {key} {value!r} is not a number") from None
    if math.isnan(x):
        raise ValueError(f"{where}: {key} is NaN")
    return x


def _manifest_path(name: str, base: Path, where: str, notes: list[str]) -> Path:
    """``name`` relative to the manifest's folder (absolute names stay); a path leading outside that
    folder is followed, and noted so the summary lists it."""
    path = Path(name) if Path(name).is_absolute() else base / name
    if not os.path.abspath(path).startswith(os.path.abspath(base) + os.sep):
        notes.append(f"{where}: {name} is outside the manifest's folder ({os.path.abspath(path)})")
    return path


def read_manifest(path: Path) -> list[VideoItem]:
    """Items of a CSV/JSONL manifest. A row that names a missing file or holds a bad value becomes an
    item with an error naming the manifest and its line (reported, not processed)."""
    try:
        rows = _manifest_rows(path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: cannot read manifest ({e})") from e
    if not rows:
        raise ValueError(f"{path}: manifest has no rows")
    columns = next((r for _, r in rows if isinstance(r, dict)), {})
    if _first({str(k).strip().lower(): v for k, v in columns.items()}, "video", "path", "name") is None:
        raise ValueError(
            f"{path}: manifest needs a 'video' (or 'path' / 'name') column, got {sorted(columns)}"
        )
    return [item for line, row in rows if (item := _manifest_item(path, line, row)) is not None]


def _manifest_item(path: Path, line: int, row: dict | str) -> VideoItem | None:
    where = f"manifest {path} line {line}"
    key = f"{path.name}:{line}"
    if isinstance(row, str):  # unparseable: reported under the manifest's own name
        return VideoItem(video=path, video_id=make_video_id(key), key=key, error=f"line {line}: {row}")
    row = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
    name = _first(row, "video", "path", "name")
    if name is None:
        return None
    item = VideoItem(video=Path(name), video_id=make_video_id(name), key=name)
    item.youtube_id = _first(row, "youtube_id")
    requested = _manifest_path(name, path.parent, where, item.notes)
    video = _resolve_video(name, path.parent)
    item.video = video or requested
    if video is None:
        item.error = f"video not found ({where})"
        return item
    subtitle = _first(row, "subtitle", "subtitles", "srt", "vtt")
    text = _first(row, "text", "transcript", "utterance", "sentence")
    try:
        if subtitle is not None:
            item.subtitle = _manifest_path(subtitle, path.parent, where, item.notes)
            if not item.subtitle.is_file():
                item.error = f"subtitle {item.subtitle} not found ({where})"
        elif text is not None:
            start = _number(row, "start", 0.0, where)
            end = _number(row, "end", math.inf, where)  # inf: the pipeline clamps it to the video's end
            item.cues = [Cue(start, end, clean_text(str(text)))]
        else:
            item.subtitle = find_sidecar(video)
            item.subtitle_stream = None if item.subtitle else embedded_text_subtitle(video)
            if item.subtitle is None and item.subtitle_stream is None:
                item.error = f"no subtitle: the row has no subtitle/text and none was found ({where})"
    except ValueError as e:
        item.error = str(e)
    return item


def discover(input_path: str | Path, identify_content: bool = True) -> list[VideoItem]:
    """All items under INPUT, sorted by name (so ``--part`` slices are deterministic); with
    ``identify_content`` their ids are computed (:func:`identify`), else the caller does it."""
    root = Path(input_path)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or directory")
    if root.is_file() and root.suffix.lower() in MANIFEST_EXTENSIONS:
        items = read_manifest(root)
    elif root.is_file():
        items = [_item_for_video(root, root.parent)]
    else:
        # input_files: never the outputs of emotionclip (an analysis's video proxies) placed inside INPUT
        videos = sorted(p for p in input_files(root) if p.suffix.lower() in VIDEO_EXTENSIONS)
        items = [_item_for_video(v, root) for v in videos]
    items.sort(key=lambda it: it.key)  # by name, not content: --part slices need no file reads
    if identify_content:
        identify(items)
    logger.info("%s: found %d videos", root, len(items))
    return items
