"""WebDataset shards, written atomically, and the bookkeeping that makes `prepare` resumable.

A clip is one WebDataset sample with key ``<video_id>__c<NNNN>`` holding ``fNNN.jpg`` (the frames),
``boxes.json`` (per-frame person boxes ``[[x1, y1, x2, y2, score], ...]``), ``txt`` (the sentence)
and ``json`` (everything else: times, sentiment logits, neutral probability, has_person, source).

Each processed video is first written to its own small tar under the state folder; the main process
then packs whole videos into shards (``<prefix>-NNNNNN.tar``, written under a temporary name in the
state folder, then renamed into the output folder) and records them in ``progress.jsonl``. The ledger line is written before the rename and the
per-video tar deleted after it, so a kill at any moment loses no finished video and leaves no
partial shard under a final name.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._io import atomic_path, atomic_write_json

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1


def fsync_rename(tmp: Path, final: Path) -> None:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)


def write_json_atomic(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=2, fsync=True)


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class AtomicTar:
    """A tar written member by member under ``.NAME.tmp`` (what ``remove_temporaries`` cleans up);
    :meth:`commit` renames it to ``path``, leaving the context without committing deletes it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._tar: tarfile.TarFile | None = None
        self.count = 0

    def add(self, members: Iterable[tuple[str, bytes]]) -> None:
        if self._tar is None:
            self._tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        for name, data in members:
            _add_member(self._tar, name, data)
        self.count += 1

    def commit(self) -> None:
        self._tar.close()
        self._tar = None
        fsync_rename(self.tmp, self.path)

    def __enter__(self) -> AtomicTar:
        return self

    def __exit__(self, *exc) -> None:
        if self._tar is not None:
            self._tar.close()
            self.tmp.unlink(missing_ok=True)


def write_tar_atomic(path: Path, members: Iterable[tuple[str, bytes]]) -> None:
    with AtomicTar(path) as tar:
        tar.add(members)
        tar.commit()


def iter_tar(path: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(path, "r") as tar:
        for info in tar:
            if info.isfile():
                yield info.name, tar.extractfile(info).read()


def sample_members(
    key: str, jpegs: list[bytes], boxes: list, text: str, meta: dict
) -> list[tuple[str, bytes]]:
    """Tar members of one clip (WebDataset naming: ``key.ext``)."""
    if "." in key:
        raise ValueError(f"sample key {key!r} must not contain '.' (WebDataset splits on it)")
    out = [(f"{key}.f{k:03d}.jpg", data) for k, data in enumerate(jpegs)]
    out.append((f"{key}.boxes.json", json.dumps(boxes, separators=(",", ":")).encode()))
    out.append((f"{key}.txt", text.encode("utf-8")))
    out.append((f"{key}.json", json.dumps(meta, separators=(",", ":")).encode()))
    return out


@dataclass
class ShardInfo:
    name: str
    clips: int = 0
    seconds: float = 0.0
    video_ids: list[str] = field(default_factory=list)


class ShardPacker:
    """Packs per-video tars into shards of about ``max_clips`` clips (a video is never split).

    The open shard is written in ``work_dir`` (the run's own state folder, so a restart cleans up only
    what this tool wrote) and renamed into ``out_dir`` when published.
    """

    def __init__(
        self, out_dir: Path, prefix: str, work_dir: Path, max_clips: int = 500, max_bytes: int = 2**30
    ):
        self.out_dir = Path(out_dir)
        self.work_dir = Path(work_dir)
        self.prefix = prefix
        self.max_clips = max_clips
        self.max_bytes = max_bytes
        pattern = re.compile(rf"^{re.escape(prefix)}-(\d{{6}})\.tar$")
        indices = [int(m.group(1)) for p in self.out_dir.iterdir() if (m := pattern.match(p.name))]
        self.next_index = max(indices, default=-1) + 1
        self._tar: tarfile.TarFile | None = None
        self._info: ShardInfo | None = None
        self._bytes = 0

    def _tmp(self, info: ShardInfo) -> Path:
        return self.work_dir / f".{info.name}.tmp"

    def add(self, video_tar: Path, video_id: str, clips: int, seconds: float) -> ShardInfo | None:
        """Append one video's clips; returns the shard if it is now full (to be finalised)."""
        if self._tar is None:
            self._info = ShardInfo(f"{self.prefix}-{self.next_index:06d}.tar")
            self.next_index += 1
            self._tar = tarfile.open(self._tmp(self._info), "w", format=tarfile.USTAR_FORMAT)
            self._bytes = 0
        for name, data in iter_tar(video_tar):
            _add_member(self._tar, name, data)
            self._bytes += len(data)
        self._info.clips += clips
        self._info.seconds += seconds
        self._info.video_ids.append(video_id)
        if self._info.clips >= self.max_clips or self._bytes >= self.max_bytes:
            return self.close_current()
        return None

    def close_current(self) -> ShardInfo | None:
        """Close the open shard (still under its temporary name); the caller records, then renames."""
        if self._tar is None:
            return None
        self._tar.close()
        info, self._tar, self._info = self._info, None, None
        return info

    def publish(self, info: ShardInfo) -> Path:
        final = self.out_dir / info.name
        fsync_rename(self._tmp(info), final)
        return final

    def abort(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tmp(self._info).unlink(missing_ok=True)
            self._tar = self._info = None


class Ledger:
    """``progress.jsonl``: one JSON line per finished video (ok / skipped / failed)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def load(self) -> dict[str, dict]:
        records: dict[str, dict] = {}
        if not self.path.exists():
            return records
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill: that video is simply redone
                records[rec["video_id"]] = rec
        return records

    def append(self, records: Iterable[dict]) -> None:
        lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
        if not lines:
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())


def build_manifest(records: Iterable[dict], out_dir: Path, settings: dict) -> dict:
    """Corpus manifest from ledger records: shards, counts, hours, filter statistics, settings."""
    shards: dict[str, dict] = {}
    stats: Counter = Counter()
    failures, skipped = [], []
    videos_ok = 0
    video_seconds = 0.0
    for r in records:
        if r["status"] != "failed":  # a failed video's counts stop mid-way and its clips were discarded
            stats.update(r.get("stats", {}))
        if r["status"] == "ok":
            videos_ok += 1
            video_seconds += r.get("duration", 0.0)
            s = shards.setdefault(r["shard"], {"name": r["shard"], "clips": 0, "seconds": 0.0, "videos": 0})
            s["clips"] += r["clips"]
            s["seconds"] += r["seconds"]
            s["videos"] += 1
        else:
            entry = {"video": r["video"], "video_id": r["video_id"], "reason": r["reason"]}
            (failures if r["status"] == "failed" else skipped).append(entry)
    shard_list = sorted(shards.values(), key=lambda s: s["name"])
    for s in shard_list:
        s["seconds"] = round(s["seconds"], 3)
    clip_seconds = sum(s["seconds"] for s in shard_list)
    return {
        "version": MANIFEST_VERSION,
        "clips": sum(s["clips"] for s in shard_list),
        "hours": round(clip_seconds / 3600, 9),
        "videos": {"ok": videos_ok, "skipped": len(skipped), "failed": len(failures)},
        "source_hours": round(video_seconds / 3600, 9),
        "filter_stats": dict(sorted(stats.items())),
        **settings,
        "shards": shard_list,
        "skipped": skipped,
        "failures": failures,
    }


def _read_part(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable part manifest ({e}); rerun that part to rewrite it") from e


def merge_manifests(out_dir: str | Path) -> dict:
    """Combine the ``manifest.part-I-of-N.json`` files of a ``--part`` run into ``manifest.json``."""
    out_dir = Path(out_dir)
    parts = sorted(out_dir.glob("manifest.part-*-of-*.json"))
    if not parts:
        raise FileNotFoundError(f"{out_dir}: no manifest.part-*-of-*.json to merge (run with --part first)")
    manifests = [_read_part(p) for p in parts]
    total = {int(re.search(r"-of-(\d+)", p.name).group(1)) for p in parts}
    if len(total) != 1:
        raise ValueError(f"{out_dir}: part manifests disagree on the number of parts: {sorted(total)}")
    n = total.pop()
    present = {int(re.search(r"part-(\d+)-of", p.name).group(1)) for p in parts}
    missing = sorted(set(range(n)) - present)
    if missing:
        logger.warning(
            "%s: parts %s of %d have no manifest yet; merging the %d present",
            out_dir,
            missing,
            n,
            len(present),
        )
    stats: Counter = Counter()
    for m in manifests:
        stats.update(m["filter_stats"])
    first = manifests[0]
    merged = {
        "version": MANIFEST_VERSION,
        "clips": sum(m["clips"] for m in manifests),
        "hours": round(sum(m["hours"] for m in manifests), 9),
        "videos": {k: sum(m["videos"][k] for m in manifests) for k in ("ok", "skipped", "failed")},
        "source_hours": round(sum(m["source_hours"] for m in manifests), 9),
        "filter_stats": dict(sorted(stats.items())),
        **{
            k: first[k]
            for k in ("detector", "scorer", "segmenter", "filter", "fps", "short_side")
            if k in first
        },
        "parts": {"total": n, "merged": sorted(present), "missing": missing},
        "shards": sorted((s for m in manifests for s in m["shards"]), key=lambda s: s["name"]),
        "skipped": [e for m in manifests for e in m["skipped"]],
        "failures": [e for m in manifests for e in m["failures"]],
    }
    write_json_atomic(out_dir / "manifest.json", merged)
    plot_manifest(merged, out_dir / "manifest.png")
    return merged


def plot_manifest(manifest: dict, path: Path) -> None:
    """``manifest.png``: what happened to the sentences (each filter) and to the videos."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = {k: v for k, v in manifest["filter_stats"].items() if k != "sentences"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [2, 1]})
    names = sorted(stats, key=lambda k: (k != "kept", -stats[k]))
    ax1.barh(
        names, [stats[k] for k in names], color=["tab:green" if k == "kept" else "tab:gray" for k in names]
    )
    ax1.invert_yaxis()
    ax1.set_xlabel("sentences")
    hours = manifest["hours"]
    size = f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.1f} min"
    ax1.set_title(
        f"{manifest['filter_stats'].get('sentences', 0)} sentences → {manifest['clips']} clips ({size})"
    )
    videos = manifest["videos"]
    ax2.bar(list(videos), list(videos.values()), color=["tab:green", "tab:orange", "tab:red"])
    ax2.set_title("videos")
    fig.tight_layout()
    with atomic_path(path, fsync=True) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
