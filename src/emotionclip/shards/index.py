"""The tar index of a corpus: where each sample lies (shard, byte range) and the scores training
filters on, built by reading the tar headers (not the data) and cached beside the corpus.

Random access into the shards (``order="uniform"`` of :func:`emotionclip.shards.reader.make_train_loader`)
reads through it; :func:`read_meta` is the one check of a sample's ``.json``, for the index and the
decoder alike.
"""

from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from emotionclip._io import atomic_path

logger = logging.getLogger(__name__)


class BadSample(ValueError):
    """A shard sample that cannot become a training clip (missing or broken field)."""


def read_meta(sample: dict) -> dict:
    """The sample's ``.json``, checked for the fields training uses."""
    where = f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}"
    if "json" not in sample:
        raise BadSample(f"{where} has no .json")
    try:
        meta = json.loads(sample["json"])
    except (ValueError, UnicodeDecodeError) as e:
        raise BadSample(f"{where} has a broken .json ({e})") from None
    missing = [k for k in ("video_id", "neutral", "has_person", "sentiment_logits") if k not in meta]
    if not isinstance(meta, dict) or missing:
        raise BadSample(f"{where}: .json lacks {missing or 'a mapping'}")
    return meta


def tar_members(f, start: int = 0, end: int | None = None):
    """(name, data offset, size) of the regular files of a tar read from ``f`` between two offsets.

    A small header parser (ustar, GNU long names, pax paths) — Python's tarfile builds an object per
    member and is ~10x slower, which matters for corpora of millions of frames."""
    offset, long_name = start, None
    while end is None or offset < end:
        f.seek(offset)
        header = f.read(512)
        if len(header) < 512 or header.count(0) == 512:
            return
        try:
            size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        except ValueError:
            raise BadSample(f"corrupt tar header at byte {offset}") from None
        kind = header[156:157]
        data = offset + 512
        offset = data + (size + 511) // 512 * 512
        if kind in (b"L", b"x"):
            f.seek(data)
            payload = f.read(size)
            if kind == b"L":
                long_name = payload.rstrip(b"\0").decode("utf-8", "replace")
            else:
                for record in payload.decode("utf-8", "replace").splitlines():
                    key, _, value = record.partition(" ")[2].partition("=")
                    if key == "path":
                        long_name = value
            continue
        if kind not in (b"0", b"\0"):
            long_name = None
            continue
        name = long_name
        if name is None:
            name = header[:100].split(b"\0", 1)[0].decode("utf-8", "replace")
            prefix = header[345:500].split(b"\0", 1)[0].decode("utf-8", "replace")
            if header[257:262] == b"ustar" and prefix:
                name = f"{prefix}/{name}"
        long_name = None
        yield name, data, size


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's key / field split: at the first dot of the file name."""
    folder, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{folder}/{key}" if folder else key), ext


@dataclass
class ShardIndex:
    """Where each sample of a corpus lies (shard, byte range) and what training filters on."""

    urls: list[str]
    shard: np.ndarray  # int32 per sample
    start: np.ndarray  # int64: first header
    end: np.ndarray  # int64: end of the last member's data
    neutral: np.ndarray  # float32
    has_person: np.ndarray  # float32
    video: np.ndarray  # int32 into video_ids
    video_ids: list[str]
    skipped: list[str] = field(default_factory=list)  # "<shard>: sample <key> ...: reason"

    def __len__(self) -> int:
        return len(self.shard)

    def select(self, max_neutral: float | None = None, min_has_person: float | None = None) -> np.ndarray:
        keep = np.ones(len(self), dtype=bool)
        if max_neutral is not None:
            keep &= self.neutral <= max_neutral
        if min_has_person:
            keep &= self.has_person >= min_has_person
        return np.flatnonzero(keep)


def _index_shard(path: str) -> tuple[list[tuple], list[str]]:
    rows, skipped = [], []
    with open(path, "rb") as f:
        groups: OrderedDict[str, dict] = OrderedDict()
        for name, data, size in tar_members(f):
            key, ext = split_name(name)
            g = groups.get(key)
            if g is None:
                if groups:  # members of a sample are contiguous: the previous one is complete
                    _finish(path, f, groups.popitem()[1], rows, skipped)
                g = groups[key] = {"key": key, "start": data - 512, "fields": {}}
            g["fields"][ext] = (data, size)
            g["end"] = data + (size + 511) // 512 * 512
        while groups:
            _finish(path, f, groups.popitem()[1], rows, skipped)
    return rows, skipped


def _finish(path: str, f, g: dict, rows: list, skipped: list) -> None:
    sample = {"__url__": path, "__key__": g["key"]}
    if "json" in g["fields"]:
        data, size = g["fields"]["json"]
        f.seek(data)
        sample["json"] = f.read(size)
    try:
        meta = read_meta(sample)
        if not any(k.startswith("f") and k.endswith(".jpg") for k in g["fields"]):
            raise BadSample(f"{path}: sample {g['key']} has no frames")
        rows.append(
            (g["start"], g["end"], float(meta["neutral"]), float(meta["has_person"]), meta["video_id"])
        )
    except (BadSample, TypeError, ValueError) as e:
        skipped.append(str(e))


def _shard_signature(urls: list[str]) -> list[list]:
    return [[u, os.stat(u).st_size, os.stat(u).st_mtime_ns] for u in urls]


def build_index(urls: list[str], cache: str | Path | None = None) -> ShardIndex:
    """Index local shards by reading their tar headers; ``cache`` (an ``.npz``) is reused while
    every shard keeps its size and modification time."""
    from tqdm import tqdm

    signature = json.dumps(_shard_signature(urls))
    if cache is not None and Path(cache).is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["signature"]) == signature:
                    return ShardIndex(
                        list(urls), z["shard"], z["start"], z["end"], z["neutral"], z["has_person"],
                        z["video"], [str(v) for v in z["video_ids"]], [str(s) for s in z["skipped"]],
                    )  # fmt: skip
        except (OSError, ValueError, KeyError) as e:
            logger.warning("%s: unreadable data index, rebuilding it (%s)", cache, e)
    shard, start, end, neutral, person, video, skipped = [], [], [], [], [], [], []
    video_ids: dict[str, int] = {}
    for k, url in enumerate(tqdm(urls, desc="indexing shards", unit="shard", disable=len(urls) < 50)):
        try:
            rows, bad = _index_shard(url)
        except (OSError, BadSample) as e:
            skipped.append(f"{url}: unreadable shard ({e})")
            continue
        skipped += bad
        for s, e, n, p, v in rows:
            shard.append(k)
            start.append(s)
            end.append(e)
            neutral.append(n)
            person.append(p)
            video.append(video_ids.setdefault(str(v), len(video_ids)))
    index = ShardIndex(
        list(urls),
        np.asarray(shard, np.int32),
        np.asarray(start, np.int64),
        np.asarray(end, np.int64),
        np.asarray(neutral, np.float32),
        np.asarray(person, np.float32),
        np.asarray(video, np.int32),
        list(video_ids),
        skipped,
    )
    for reason in skipped[:20]:
        logger.warning("%s; skipped", reason)
    if skipped:
        logger.warning("%d shard samples skipped while indexing (listed above, first 20)", len(skipped))
    if cache is not None:
        _save_index(index, signature, Path(cache))
    return index


def _save_index(index: ShardIndex, signature: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            signature=np.asarray(signature),
            shard=index.shard,
            start=index.start,
            end=index.end,
            neutral=index.neutral,
            has_person=index.has_person,
            video=index.video,
            video_ids=np.asarray(index.video_ids, dtype=str),
            skipped=np.asarray(index.skipped, dtype=str),
        )
