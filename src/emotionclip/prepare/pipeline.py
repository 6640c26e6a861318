"""`prepare()`: videos + subtitles → WebDataset shards, resumable and parallel.

Per video (:func:`process_video`, in a worker process when ``workers > 0``): subtitles → validated
cues → sentences → candidate clips (timing/text filters) → sentiment (neutral filter) → frames at
``fps``, short side ``short_side`` (only the clip ranges are decoded, a video's clips in shared passes:
:func:`~emotionclip.video_io.decode_ranges`) → person boxes (``has_person``;
the person filter) → one small per-video tar. The main process (:func:`prepare`) claims the output
folder, plans the work against the ledger, packs finished videos into shards and writes the
manifest and summary (see :mod:`emotionclip.shards.writer`).
"""

from __future__ import annotations

import ctypes
import io
import json
import logging
import math
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import ExitStack, closing
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from .._io import OUTPUT_MARKER, FileError, atomic_write_json, claim_output_dir, remove_temporaries
from .._prefetch import prefetch
from ..detect import PersonDetector, track_boxes
from ..detect.base import as_boxes
from ..jobs import Part, complete_set, current_part, rank_device
from ..sentiment import SentimentScorer, neutral_probability
from ..shards.writer import (
    AtomicTar,
    Ledger,
    ShardPacker,
    build_manifest,
    merge_manifests,
    plot_manifest,
    sample_members,
    write_json_atomic,
)
from ..subtitles import SubtitleError, load_subtitles
from ..video_io import VideoError, decode_ranges, probe_video
from .clips import Candidate, ClipFilter, select_candidates
from .discovery import VideoItem, discover, identify, read_embedded_cues, youtube_ids
from .punctuation import PunctuationRestorer
from .subtitles import Segmenter, cues_to_sentences, get_segmenter, validate_cues

logger = logging.getLogger(__name__)

TOOL = "prepare"  # the output-folder marker's tool name
# the YouTube ids the release keeps out of pre-training because BoLD's clips come from them
RELEASE_EXCLUDED_IDS = "release-bold"
_MAX_WARNINGS = 20  # bad cues listed per video (all are counted)


@dataclass
class PrepareConfig:
    detector: str | PersonDetector | None = (
        "default"  # emotionclip.detect.resolve_detector: a name, "none", or a detector
    )
    # where a named detector runs: "cuda[:N]" puts MoveNet / NanoDet on ONNX Runtime's CUDA provider
    # (emotionclip.detect.resolve_detector); under torchrun / srun a bare "cuda" is the process's GPU
    device: str = "cpu"
    # follow people through the clip's frames (emotionclip.detect.track): track ids, one-frame gaps
    # filled; False detects each frame alone, as the release does
    track: bool = True
    scorer: str | SentimentScorer = "default"  # a name for emotionclip.sentiment.get_sentiment_scorer
    segmenter: str | Segmenter = "default"  # a name for subtitles.get_segmenter, or a segmenter
    punctuation: str | None = None  # token-classification model restoring punctuation first
    filter: ClipFilter = field(default_factory=ClipFilter)
    short_side: int = 256
    jpeg_quality: int = 90
    shard_clips: int = 500  # clips per shard (a video is never split, so shards may run over)
    workers: int = 0  # 0: in this process; N: a pool of N processes
    # "I/N" or a Part: one of N disjoint slices (0-based), split further by torchrun / srun ranks
    # (emotionclip.jobs); the part that completes the set merges the manifests
    part: str | Part | None = None
    retry_failed: bool = False
    # YouTube ids to leave out: the release's BoLD-overlap list, a file of ids, or None
    exclude_ids: str | Path | None = RELEASE_EXCLUDED_IDS

    def settings(self, detector, scorer, segmenter) -> dict:
        return {
            "detector": "none" if detector is None else getattr(detector, "name", type(detector).__name__),
            "track": self.track and detector is not None,
            "scorer": getattr(scorer, "name", type(scorer).__name__),
            "segmenter": getattr(segmenter, "name", None)
            or (self.segmenter if isinstance(self.segmenter, str) else type(segmenter).__name__),
            "filter": self.filter.to_dict(),
            "fps": self.filter.fps,
            "short_side": self.short_side,
            "jpeg_quality": self.jpeg_quality,
            "exclude_ids": None if self.exclude_ids is None else str(self.exclude_ids),
        }


def load_excluded_ids(spec: str | Path | None) -> set[str]:
    """``release-bold`` (the shipped list), a file with one id per line (``#`` comments), or None."""
    if spec is None or str(spec) == "none":
        return set()
    if str(spec) == RELEASE_EXCLUDED_IDS:
        text = resources.files(__package__).joinpath("data/release_bold_overlap_ids.txt").read_text()
    else:
        try:
            text = Path(spec).read_text(encoding="utf-8-sig")
        except OSError as e:
            raise FileError(spec, f"cannot read the list of ids to exclude ({e.strerror or e})") from e
    return {line.split("#")[0].strip() for line in text.splitlines()} - {""}


# ------------------------------------------------------------------ the per-video record


@dataclass
class VideoRecord:
    """What happened to one video: a ledger line, and a row of the manifest and summary."""

    video_id: str
    video: str
    subtitle: str
    status: str = "ok"  # ok | skipped | failed
    reason: str = ""
    clips: int = 0
    seconds: float = 0.0  # of clips kept
    duration: float = 0.0  # of the video
    stats: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # bad cues (the first few), paths outside a manifest
    shard: str | None = None  # set when its clips are published

    @classmethod
    def of(cls, item: VideoItem) -> VideoRecord:
        return cls(item.video_id, str(item.video), item.source, warnings=list(item.notes))

    @classmethod
    def from_dict(cls, d: dict) -> VideoRecord:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["shard"] is None:
            del d["shard"]
        return d

    def fail(self, reason: str) -> VideoRecord:
        self.status, self.reason = "failed", reason
        return self


# ------------------------------------------------------------------ per video (runs in workers)


@dataclass
class _Context:
    detector: object
    scorer: object
    segmenter: Segmenter
    config: PrepareConfig
    pending_dir: Path


_CTX: _Context | None = None


def _die_with_parent(parent: int) -> None:
    """A worker must not outlive a killed ``prepare``: the kernel kills it when its parent dies
    (Linux prctl PR_SET_PDEATHSIG), elsewhere a watchdog thread notices the parent is gone."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="parent-watchdog").start()


def _init_worker(ctx: _Context, parent: int) -> None:
    global _CTX
    _die_with_parent(parent)
    import torch

    torch.set_num_threads(1)  # N worker processes share the cores
    # a forked child inherits the parent's objects as they are; a pickle round trip gives it
    # fresh ones (detectors drop runtime handles such as the TFLite interpreter in __getstate__)
    _CTX = pickle.loads(pickle.dumps(ctx))


def _encode_jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _load_cues(item: VideoItem):
    if item.cues is not None:
        return item.cues
    if item.subtitle is not None:
        return load_subtitles(item.subtitle)
    return read_embedded_cues(item.video, item.subtitle_stream)


def _sentences(item: VideoItem, duration: float, ctx: _Context, record: VideoRecord, stats: Counter):
    """Step 1: validated cues → sentences. Bad cues are counted and listed, the rest go on."""
    # a manifest's one-cue text without an end time spans the whole video
    cues = [c if c.end != math.inf else replace(c, end=duration) for c in _load_cues(item)]
    good, problems = validate_cues(cues, duration, stats, where=item.source)
    record.warnings += problems[:_MAX_WARNINGS]
    if not good:
        raise SubtitleError(item.source, f"no usable cues: all {len(problems)} are bad ({problems[0]})")
    sentences = cues_to_sentences(good, ctx.segmenter)
    if not sentences:
        raise SubtitleError(item.source, "no spoken text left after removing markup and non-speech cues")
    return sentences


# frames decoded ahead of the detector: one chunk is detected while the next one decodes
_DETECT_CHUNK = 8


def _chunks(events, size: int):
    """``decode_ranges``' frames in chunks of ``size`` frames of one clip: ``(clip, times, frames,
    complete)``, the last chunk of each clip marked ``complete`` (it may be empty)."""
    pending: dict[int, tuple[list, list]] = {}
    for k, t, frame in events:
        times, batch = pending.setdefault(k, ([], []))
        if frame is None:
            del pending[k]
            yield k, times, batch, True
            continue
        times.append(t)
        batch.append(frame)
        if len(batch) == size:
            del pending[k]
            yield k, times, batch, False


def _decode_detect(path: Path, cands: list[Candidate], ctx: _Context, duration: float):
    """Each candidate's frames, their times and their person boxes (None without a detector), in
    the candidates' order.

    The clips of a video are decoded together (:func:`decode_ranges`: one forward pass over the
    clips a single decode serves, each clip getting the frames its own seek would give) in a
    background thread, ``_DETECT_CHUNK`` frames ahead of the detector, so the two overlap; every
    detector finds each frame's boxes from that frame alone, so detecting in chunks gives the boxes
    of one call on the whole clip (tracking runs afterwards, on all of them). A clip that is
    complete waits only for the clips before it (overlapping clips can finish out of order).
    """
    rules, detector = ctx.config.filter, ctx.detector
    spans = [rules.frame_range(c.start, c.end) for c in cands]
    events = decode_ranges(
        path, [(first, stop) for first, stop, _ in spans], rules.fps, ctx.config.short_side
    )

    def detect(chunk):
        k, chunk_times, chunk_frames, complete = chunk
        if not chunk_frames:
            return k, chunk_times, None, [], complete
        chunk_frames = np.stack(chunk_frames)
        if detector is None:
            return k, chunk_times, chunk_frames, [], complete
        boxes = detector.detect(chunk_frames, video=str(path), times=chunk_times)
        return k, chunk_times, chunk_frames, list(boxes), complete

    clips: dict[int, tuple[list, list, list]] = {}
    finished: dict[int, tuple] = {}
    next_k = 0
    for k, chunk_times, chunk_frames, chunk_boxes, complete in prefetch(
        _chunks(events, _DETECT_CHUNK), detect, depth=2
    ):
        times, parts, boxes = clips.setdefault(k, ([], [], []))
        times += chunk_times
        if chunk_frames is not None:
            parts.append(chunk_frames)
        boxes += chunk_boxes
        if not complete:
            continue
        del clips[k]
        # the container promised frames up to `duration`; far fewer means the data stops early (a
        # stream ending a little before the container's duration, as in many MKVs, is normal)
        cand, expected = cands[k], spans[k][2]
        if len(times) < expected / 2 and cand.end <= duration:
            raise VideoError(
                path,
                f"decoded only {len(times)} of {expected} frames in [{cand.start:.2f}, {cand.end:.2f}] s "
                "(truncated or corrupt file)",
            )
        frames = np.concatenate(parts) if parts else None
        finished[k] = (times, frames, boxes if detector is not None else None)
        while next_k in finished:
            yield finished.pop(next_k)
            next_k += 1


def _clip_members(item: VideoItem, cand: Candidate, decoded, ctx: _Context, logits, neutral, stats: Counter):
    """Step 2, one candidate and its decoded frames and boxes: filter; its tar members and seconds, or None."""
    rules = ctx.config.filter
    times, frames, boxes = decoded
    if len(times) < rules.min_frames:
        stats["too_few_frames"] += 1
        return None
    if boxes is None:  # --detector none: no boxes, has_person 0
        boxes = [np.zeros((0, 5), np.float32)] * len(frames)
    elif ctx.config.track:
        boxes = track_boxes(boxes)
    with_person = [bool((np.asarray(b)[:, 4] > rules.person_score).any()) if len(b) else False for b in boxes]
    has_person = float(np.mean(with_person))
    if has_person < rules.min_person_fraction:
        stats["no_person"] += 1
        return None
    h, w = frames.shape[1:3]
    meta = {
        "video_id": item.video_id,
        "video": str(item.video),
        "clip": cand.index,
        "start": round(cand.start, 3),
        "end": round(cand.end, 3),
        "fps": rules.fps,
        "frame_times": [round(t, 3) for t in times],
        "width": int(w),
        "height": int(h),
        "text": cand.text,
        "sentiment_logits": [round(float(x), 4) for x in logits],
        "neutral": round(float(neutral), 5),
        "has_person": round(has_person, 4),
    }
    jpegs = [_encode_jpeg(f, ctx.config.jpeg_quality) for f in frames]
    box_lists = [np.round(as_boxes(b), 2).tolist() for b in boxes]
    members = sample_members(f"{item.video_id}__c{cand.index:04d}", jpegs, box_lists, cand.text, meta)
    return members, meta["end"] - meta["start"]


def process_video(item: VideoItem, ctx: _Context) -> dict:
    """Prepare one video; returns its ledger record as a dict (its clips, if any, are in ``pending_dir``)."""
    record = VideoRecord.of(item)
    stats: Counter = Counter()
    try:
        if item.error:
            raise ValueError(f"{item.video}: {item.error}")
        info = probe_video(item.video)
        record.duration = info.duration
        sentences = _sentences(item, info.duration, ctx, record, stats)
        rules = ctx.config.filter
        candidates = select_candidates(sentences, info.duration, rules, stats)
        if candidates:
            logits = np.asarray(ctx.scorer.score([c.text for c in candidates]), dtype=np.float32)
            neutral = neutral_probability(logits)
        kept = [
            c
            for k, c in enumerate(candidates)
            if rules.max_neutral is None or neutral[k] <= rules.max_neutral
        ]
        # closed on the way out: stops its decoding thread if a clip fails
        with (
            AtomicTar(ctx.pending_dir / f"{item.video_id}.tar") as out,  # streamed: RAM stays small
            closing(_decode_detect(item.video, kept, ctx, info.duration)) as decoded,
        ):
            for k, cand in enumerate(candidates):
                if rules.max_neutral is not None and neutral[k] > rules.max_neutral:
                    stats["too_neutral"] += 1
                    continue
                clip = _clip_members(item, cand, next(decoded), ctx, logits[k], neutral[k], stats)
                if clip is None:
                    continue
                out.add(clip[0])
                record.seconds += clip[1]
                stats["kept"] += 1
            record.stats = dict(stats)
            if not out.count:
                record.status, record.reason = "skipped", _no_clip_reason(stats)
                return record.to_dict()
            out.commit()
        record.clips, record.seconds = out.count, round(record.seconds, 3)
        write_json_atomic(ctx.pending_dir / f"{item.video_id}.json", record.to_dict())
        return record.to_dict()
    except Exception as e:  # a long job logs, skips and reports whatever went wrong with one video
        logger.debug("%s failed:\n%s", item.video, traceback.format_exc())
        # our own errors already name the file and the problem; anything else keeps its type
        ours = isinstance(e, (VideoError, FileError, ValueError))
        record.stats = dict(stats)
        return record.fail(str(e) if ours else f"{item.video}: {type(e).__name__}: {e}").to_dict()


def _no_clip_reason(stats: Counter) -> str:
    if stats.get("sentences", 0) == 0:
        return "no sentences in the subtitles"
    if stats.get("no_person"):
        return f"no people: {stats['no_person']} candidate clips had too few frames with a person"
    dropped = ", ".join(f"{k}={v}" for k, v in sorted(stats.items()) if k not in ("sentences", "kept"))
    return f"no clip passed the filters ({stats['sentences']} sentences; {dropped or 'none dropped'})"


def _run_one(item: VideoItem) -> dict:
    return process_video(item, _CTX)


# ------------------------------------------------------------------ the run (main process)


def _paths(out_dir: Path, part: Part | None) -> tuple[str, Path, Path, Path]:
    if part is None:
        return "shard", out_dir / ".prepare", out_dir / "manifest.json", out_dir / "summary.json"
    return (
        f"p{part.index:04d}",
        out_dir / ".prepare" / part.name,
        _part_manifest(out_dir, part),
        out_dir / f"summary.{part.name}.json",
    )


def _part_manifest(out_dir: Path, part: Part) -> Path:
    return out_dir / f"manifest.{part.name}.json"


def _rename_legacy_part(out_dir: Path, part: Part) -> None:
    """Before 0.3 a part's files were named ``part-0003-of-0016``: renamed, so that the part resumes
    and ``merge`` never counts one part twice."""
    old = f"part-{part.index:04d}-of-{part.count:04d}"
    for before, after in (
        (out_dir / ".prepare" / old, out_dir / ".prepare" / part.name),
        *(
            (out_dir / f"{kind}.{old}{ext}", out_dir / f"{kind}.{part.name}{ext}")
            for kind, ext in (("manifest", ".json"), ("manifest", ".png"), ("summary", ".json"))
        ),
    ):
        if before.exists() and not after.exists():
            before.rename(after)


def _build_components(config: PrepareConfig):
    from ..detect import resolve_detector
    from ..sentiment import get_sentiment_scorer

    segmenter = get_segmenter(config.segmenter, punctuation=config.punctuation)
    if isinstance(getattr(segmenter, "punctuation", None), PunctuationRestorer):
        segmenter.punctuation.load()  # a wrong model name fails here, not once per video
    # the one resolver of analyze and evaluate
    detector = resolve_detector(config.detector, device=rank_device(config.device))
    scorer = get_sentiment_scorer(config.scorer) if isinstance(config.scorer, str) else config.scorer
    return detector, scorer, segmenter


def _adopt(folder: Path) -> None:
    """A corpus (or a part's state) written before output folders were marked is still ours to resume."""
    marker = folder / OUTPUT_MARKER
    if (
        folder.is_dir()
        and not marker.exists()
        and ((folder / ".prepare").is_dir() or (folder / "pending").is_dir())
    ):
        atomic_write_json(marker, {"tool": TOOL, "format": 1})


def prepare(input_path: str | Path, out_dir: str | Path, config: PrepareConfig | None = None) -> dict:
    """Prepare every video under ``input_path`` into shards in ``out_dir``; returns the run summary.

    ``out_dir`` must be new, empty or an earlier ``prepare`` output (:func:`claim_output_dir`); one
    process writes it at a time, except ``part`` jobs, which share it and each lock their own state.
    A rerun skips videos the ledger marks done (failed ones too, unless ``retry_failed``) and packs
    videos a killed run had finished but not yet packed. Writes ``manifest.json`` (every shard of the
    corpus) and ``summary.json`` (this run), or their ``.part-I-of-N`` variants with ``part``.
    """
    config = config or PrepareConfig()
    out_dir = Path(out_dir)
    part = current_part(config.part)
    excluded_ids = load_excluded_ids(config.exclude_ids)
    items = discover(input_path, identify_content=False)
    if part is not None:
        items = part.select(items)
    prefix, state_dir, manifest_path, summary_path = _paths(out_dir, part)
    _adopt(out_dir)
    with ExitStack() as held:
        held.enter_context(claim_output_dir(out_dir, TOOL, shared=part is not None))
        if part is not None:
            _rename_legacy_part(out_dir, part)
            _adopt(state_dir)
            held.enter_context(claim_output_dir(state_dir, TOOL))
        run = _Run(out_dir, state_dir, prefix, config)
        run.identify(items)  # content hashes: only this part's videos are read
        plan = run.plan(items, excluded_ids)
        run.process(plan)
        summary = run.finish(plan, manifest_path, summary_path, part)
        if part is not None and _merge_if_complete(out_dir, part) is not None:
            logger.info(
                "%s completed the set: %s holds all %d parts",
                part.name,
                out_dir / "manifest.json",
                part.count,
            )
        return summary


def _merge_if_complete(out_dir: Path, part: Part) -> dict | None:
    """The part that completes the set merges the part manifests (``--merge`` does it by hand)."""
    return complete_set(
        out_dir, part, lambda p: _part_manifest(out_dir, p).is_file(), lambda: merge_manifests(out_dir)
    )


def merge(out_dir: str | Path) -> dict:
    """``prepare --merge``: combine the part manifests into ``manifest.json``, holding the folder alone."""
    with claim_output_dir(out_dir, TOOL, create=False):
        return merge_manifests(out_dir)


@dataclass
class _Plan:
    items: list[VideoItem]
    todo: list[VideoItem]
    recovered: list[VideoItem]  # finished by a killed run, not yet packed
    excluded: list[tuple[VideoItem, str]]  # (item, its excluded YouTube id)


class _Run:
    """The main process's steps: plan against the ledger, process and pack, write manifest and summary."""

    def __init__(self, out_dir: Path, state_dir: Path, prefix: str, config: PrepareConfig):
        self.out_dir, self.config = out_dir, config
        self.pending_dir = state_dir / "pending"
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        for d in (state_dir, self.pending_dir):  # this run's own state: what a killed run was writing
            remove_temporaries(d)
        self.ledger = Ledger(state_dir / "progress.jsonl")
        self.packer = ShardPacker(out_dir, prefix, state_dir, max_clips=config.shard_clips)
        self.records = {k: VideoRecord.from_dict(r) for k, r in self.ledger.load().items()}
        self.run_records: list[VideoRecord] = []
        self.waiting: dict[str, VideoRecord] = {}  # clips in the open shard
        self.t0 = time.time()

    def identify(self, items: list[VideoItem]) -> None:
        path = self.ledger.path.with_name("fingerprints.json")
        try:
            cache = json.loads(path.read_text())
        except (OSError, ValueError):
            cache = {}  # none yet, or unreadable: hash the videos again
        cache = cache if isinstance(cache, dict) else {}
        size = len(cache)
        identify(items, cache)
        if len(cache) != size:
            atomic_write_json(path, cache, indent=None)

    def plan(self, items: list[VideoItem], excluded_ids: set[str]) -> _Plan:
        # an "ok" record whose shard never got its final name (kill between ledger and rename) is redone
        self.records = {
            k: r
            for k, r in self.records.items()
            if r.status != "ok" or (self.out_dir / str(r.shard)).exists()
        }
        done = {k for k, r in self.records.items() if r.status != "failed" or not self.config.retry_failed}
        excluded = [
            (it, (youtube_ids(it) & excluded_ids).pop()) for it in items if youtube_ids(it) & excluded_ids
        ]
        skip = done | {it.video_id for it, _ in excluded}
        todo = [it for it in items if it.video_id not in skip]
        recovered = [
            it
            for it in todo
            if self._pending(it.video_id, ".json").exists() and self._pending(it.video_id, ".tar").exists()
        ]
        todo = [it for it in todo if it not in recovered]
        logger.info(
            "%d videos: %d already done, %d excluded, %d finished but unpacked, %d to process",
            len(items),
            len(items) - len(todo) - len(recovered) - len(excluded),
            len(excluded),
            len(recovered),
            len(todo),
        )
        for it, yid in excluded:
            logger.info("excluded %s: YouTube id %s is in the exclusion list", it.video, yid)
        return _Plan(items, todo, recovered, excluded)

    def _pending(self, video_id: str, ext: str) -> Path:
        return self.pending_dir / f"{video_id}{ext}"

    def process(self, plan: _Plan) -> None:
        self.detector, self.scorer, self.segmenter = _build_components(self.config)
        ctx = _Context(self.detector, self.scorer, self.segmenter, self.config, self.pending_dir)
        bar = tqdm(
            total=len(plan.todo) + len(plan.recovered), desc="videos", unit="video", dynamic_ncols=True
        )
        clips = failed = 0
        try:
            for it in plan.recovered:
                self._accept(json.loads(self._pending(it.video_id, ".json").read_text()))
                bar.update()
            for record in _results(plan.todo, ctx, self.config.workers):
                self._accept(record)
                clips += record["clips"]
                failed += record["status"] == "failed"
                bar.set_postfix(clips=clips, failed=failed, refresh=False)
                bar.update()
            shard = self.packer.close_current()
            if shard is not None:
                self._publish(shard)
        finally:
            bar.close()
            self.packer.abort()  # only does something if we are leaving on an exception

    def _accept(self, record: dict) -> None:
        rec = VideoRecord.from_dict(record)
        self.run_records.append(rec)
        if rec.status != "ok":
            level = logging.WARNING if rec.status == "failed" else logging.INFO
            logger.log(level, "%s %s: %s", rec.status, rec.video, rec.reason)
            self.ledger.append([rec.to_dict()])
            self.records[rec.video_id] = rec
            return
        self.waiting[rec.video_id] = rec
        shard = self.packer.add(self._pending(rec.video_id, ".tar"), rec.video_id, rec.clips, rec.seconds)
        if shard is not None:
            self._publish(shard)

    def _publish(self, shard) -> None:
        recs = [replace(self.waiting.pop(v), shard=shard.name) for v in shard.video_ids]
        self.ledger.append([r.to_dict() for r in recs])  # ledger first: a kill before the rename redoes them
        self.packer.publish(shard)
        for r in recs:
            self.records[r.video_id] = r
            for ext in (".tar", ".json"):
                self._pending(r.video_id, ext).unlink(missing_ok=True)
        logger.info("wrote %s (%d clips, %.1f min)", shard.name, shard.clips, shard.seconds / 60)

    def finish(self, plan: _Plan, manifest_path: Path, summary_path: Path, part: Part | None) -> dict:
        settings = self.config.settings(self.detector, self.scorer, self.segmenter)
        # every video of this ledger, not only this run's input: the manifest lists every shard on disk
        manifest = build_manifest(
            (r.to_dict() for _, r in sorted(self.records.items())), self.out_dir, settings
        )
        if part is not None:
            manifest["part"] = {"index": part.index, "total": part.count}
        write_json_atomic(manifest_path, manifest)
        plot_manifest(manifest, manifest_path.with_suffix(".png"))
        summary = _summary(plan, self.run_records, manifest, time.time() - self.t0)
        write_json_atomic(summary_path, summary)
        logger.info(
            "%d clips (%.2f h) in %d shards; this run: %d ok, %d skipped, %d failed, %d excluded (details in %s)",
            manifest["clips"],
            manifest["hours"],
            len(manifest["shards"]),
            summary["ok"],
            summary["skipped"],
            summary["failed"],
            len(summary["excluded"]),
            summary_path,
        )
        return summary


def _start_method() -> str:
    """fork (no re-import per worker) unless CUDA is already initialised here, which a fork breaks."""
    import torch

    if "fork" not in multiprocessing.get_all_start_methods() or torch.cuda.is_initialized():
        return "spawn"
    return "fork"


def _results(items: list[VideoItem], ctx: _Context, workers: int):
    """Records of ``items`` as they finish, in this process or a pool of ``workers`` processes.

    A worker that dies (a decoder or detector crashing on one file) breaks the whole pool without
    saying which video did it: the videos that were in flight are then retried one at a time, so
    the culprit is reported as failed and the others go through.
    """
    if workers <= 0:
        for it in items:
            yield process_video(it, ctx)
        return
    mp = multiprocessing.get_context(_start_method())
    queue = iter(items)
    while True:
        crashed = yield from _run_pool(queue, ctx, workers, mp)
        if crashed is None:
            return
        for it in crashed:
            suspects = iter([it])
            if (yield from _run_pool(suspects, ctx, 1, mp)) is not None:
                yield _crash_record(it)


def _run_pool(queue, ctx: _Context, workers: int, mp):
    """Runs ``queue`` through a pool; returns None when done, or the in-flight items if the pool broke."""
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=mp, initializer=_init_worker, initargs=(ctx, os.getpid())
    ) as pool:
        running: dict = {}
        while True:
            while len(running) < 2 * workers:  # a bounded window: millions of inputs stay lazy
                it = next(queue, None)
                if it is None:
                    break
                running[pool.submit(_run_one, it)] = it
            if not running:
                return None
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                it = running.pop(f)
                try:
                    yield f.result()
                except BrokenProcessPool:
                    logger.warning(
                        "a worker process died while %d videos were in flight; retrying them one by one",
                        len(running) + 1,
                    )
                    return [it, *running.values()]


def _crash_record(item: VideoItem) -> dict:
    reason = f"{item.video}: the worker process died while processing it (decoder or detector crash)"
    return VideoRecord.of(item).fail(reason).to_dict()


def _summary(plan: _Plan, run_records: list[VideoRecord], manifest: dict, elapsed: float) -> dict:
    by_status = Counter(r.status for r in run_records)
    bad_cues = sum(v for r in run_records for k, v in r.stats.items() if k.startswith("bad_cue_"))
    return {
        "inputs": len(plan.items),
        "already_done": len(plan.items) - len(plan.todo) - len(plan.recovered) - len(plan.excluded),
        "processed": len(run_records),
        "ok": by_status["ok"],
        "skipped": by_status["skipped"],
        "failed": by_status["failed"],
        "clips_written": sum(r.clips for r in run_records),
        "video_seconds": round(sum(r.duration for r in run_records), 3),
        "elapsed_s": round(elapsed, 2),
        "corpus_clips": manifest["clips"],
        "corpus_hours": manifest["hours"],
        "bad_cues": bad_cues,
        "failures": [{"video": r.video, "reason": r.reason} for r in run_records if r.status == "failed"],
        "skipped_videos": [
            {"video": r.video, "reason": r.reason} for r in run_records if r.status == "skipped"
        ],
        "excluded": [{"video": str(it.video), "youtube_id": yid} for it, yid in plan.excluded],
        "warnings": [{"video": r.video, "warnings": r.warnings} for r in run_records if r.warnings],
    }


def exit_code(summary: dict) -> int:
    """2: no inputs found; 1: videos were processed, none gave a clip and the corpus is empty;
    0 otherwise (something is in the corpus, or nothing was left to do)."""
    if summary["inputs"] == 0:
        return 2
    if summary["processed"] and summary["ok"] == 0 and summary["corpus_clips"] == 0:
        return 1
    return 0
