"""`prepare()`: videos + subtitles → WebDataset shards, resumable and parallel.

Per video (in a worker process when ``workers > 0``): subtitles → sentences → candidate clips
(timing/text filters) → sentiment (neutral filter) → frames at ``fps``, short side ``short_side``
(only the clip ranges are decoded) → person boxes (person filter) → one small per-video tar.
The main process packs finished videos into shards and keeps the ledger (see ``shards.py``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import multiprocessing
import pickle
import time
import traceback
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from emotionclip._io import remove_temporaries
from emotionclip.video_io import VideoError, iter_frames, probe_video

from ..detect import PersonDetector
from ..sentiment import SentimentScorer, neutral_probability
from ..shards.writer import (
    AtomicTar,
    Ledger,
    ShardPacker,
    build_manifest,
    plot_manifest,
    sample_members,
    write_json_atomic,
)
from .clips import ClipFilter, select_candidates
from .discovery import VideoItem, discover, read_embedded_cues
from .subtitles import Segmenter, SubtitleError, cues_to_sentences, get_segmenter, load_subtitles

logger = logging.getLogger(__name__)


@dataclass
class PrepareConfig:
    detector: str | PersonDetector = "default"  # a name for emotionclip.detect.get_detector, or a detector
    scorer: str | SentimentScorer = (
        "default"  # a name for emotionclip.sentiment.get_sentiment_scorer, or a scorer
    )
    segmenter: str | Segmenter = "default"  # a name for subtitles.get_segmenter, or a callable
    filter: ClipFilter = field(default_factory=ClipFilter)
    short_side: int = 256
    jpeg_quality: int = 90
    shard_clips: int = 500  # clips per shard (a video is never split, so shards may run over)
    workers: int = 0  # 0: in this process; N: a pool of N processes
    part: tuple[int, int] | None = None  # (i, n): the i-th of n disjoint slices (0-based)
    retry_failed: bool = False

    def settings(self, detector, scorer, segmenter) -> dict:
        return {
            "detector": getattr(detector, "name", type(detector).__name__),
            "scorer": getattr(scorer, "name", type(scorer).__name__),
            "segmenter": self.segmenter
            if isinstance(self.segmenter, str)
            else getattr(segmenter, "__name__", type(segmenter).__name__),
            "filter": self.filter.to_dict(),
            "fps": self.filter.fps,
            "short_side": self.short_side,
            "jpeg_quality": self.jpeg_quality,
        }


def parse_part(text: str) -> tuple[int, int]:
    """``"I/N"`` → ``(I, N)`` with ``0 <= I < N``."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ValueError(f"--part must look like I/N (e.g. 3/16), got {text!r}") from e
    if not 0 <= i < n:
        raise ValueError(f"--part {text}: need 0 <= I < N")
    return i, n


# ------------------------------------------------------------------ per video (runs in workers)


@dataclass
class _Context:
    detector: object
    scorer: object
    segmenter: Segmenter
    config: PrepareConfig
    pending_dir: Path


_CTX: _Context | None = None


def _init_worker(ctx: _Context) -> None:
    global _CTX
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


def _decode_clip(path: Path, start: float, end: float, rules: ClipFilter, short_side: int, duration: float):
    times, frames = [], []
    for t, frame in iter_frames(path, start, end, fps=rules.fps, short_side=short_side):
        times.append(t)
        frames.append(frame)
    expected = rules.expected_frames(end - start)
    # the container promised frames up to `duration`; far fewer means the data stops early (a
    # stream ending a little before the container's duration, as in many MKVs, is normal)
    if len(frames) < expected / 2 and end <= duration:
        raise VideoError(
            path,
            f"decoded only {len(frames)} of {expected} frames in [{start:.2f}, {end:.2f}) s (truncated or corrupt file)",
        )
    return times, frames


def process_video(item: VideoItem, ctx: _Context) -> dict:
    """Prepare one video; returns its ledger record (its clips, if any, are in ``pending_dir``)."""
    record = {
        "video_id": item.video_id,
        "video": str(item.video),
        "subtitle": item.source,
        "status": "ok",
        "reason": "",
        "clips": 0,
        "seconds": 0.0,
        "duration": 0.0,
        "stats": {},
    }
    stats: Counter = Counter()
    try:
        if item.error:
            raise ValueError(f"{item.video}: {item.error}")
        info = probe_video(item.video)
        record["duration"] = info.duration
        # a manifest's one-cue text without an end time spans the whole video
        cues = [c if math.isfinite(c.end) else replace(c, end=info.duration) for c in _load_cues(item)]
        sentences = cues_to_sentences(cues, ctx.segmenter)
        if not sentences:
            raise SubtitleError(item.source, "no spoken text left after removing markup and non-speech cues")
        rules = ctx.config.filter
        candidates = select_candidates(sentences, info.duration, rules, stats)
        if candidates:
            logits = np.asarray(ctx.scorer.score([c.text for c in candidates]), dtype=np.float32)
            neutral = neutral_probability(logits)
        seconds = 0.0
        with AtomicTar(
            ctx.pending_dir / f"{item.video_id}.tar"
        ) as out:  # streamed: long videos stay small in RAM
            for k, cand in enumerate(candidates):
                if rules.max_neutral is not None and neutral[k] > rules.max_neutral:
                    stats["too_neutral"] += 1
                    continue
                times, frames = _decode_clip(
                    item.video, cand.start, cand.end, rules, ctx.config.short_side, info.duration
                )
                if len(frames) < rules.min_frames:
                    stats["too_few_frames"] += 1
                    continue
                frames = np.stack(frames)
                boxes = ctx.detector.detect(frames, video=str(item.video), times=times)
                with_person = [
                    bool((np.asarray(b)[:, 4] > rules.person_score).any()) if len(b) else False for b in boxes
                ]
                has_person = float(np.mean(with_person))
                if has_person < rules.min_person_fraction:
                    stats["no_person"] += 1
                    continue
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
                    "sentiment_logits": [round(float(x), 4) for x in logits[k]],
                    "neutral": round(float(neutral[k]), 5),
                    "has_person": round(has_person, 4),
                }
                jpegs = [_encode_jpeg(f, ctx.config.jpeg_quality) for f in frames]
                box_lists = [np.round(np.asarray(b, np.float32).reshape(-1, 5), 2).tolist() for b in boxes]
                out.add(
                    sample_members(f"{item.video_id}__c{cand.index:04d}", jpegs, box_lists, cand.text, meta)
                )
                seconds += meta["end"] - meta["start"]
                stats["kept"] += 1
            record["stats"] = dict(stats)
            if not out.count:
                record["status"] = "skipped"
                record["reason"] = _no_clip_reason(stats)
                return record
            out.commit()
        record["clips"] = out.count
        record["seconds"] = round(seconds, 3)
        write_json_atomic(ctx.pending_dir / f"{item.video_id}.json", record)
        return record
    except Exception as e:  # a long job logs, skips and reports whatever went wrong with one video
        logger.debug("%s failed:\n%s", item.video, traceback.format_exc())
        # our own errors already name the file and the problem; anything else keeps its type
        reason = (
            str(e) if isinstance(e, (VideoError, SubtitleError, ValueError)) else f"{type(e).__name__}: {e}"
        )
        record.update(status="failed", reason=reason, stats=dict(stats))
        return record


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


def _paths(out_dir: Path, part: tuple[int, int] | None) -> tuple[str, Path, Path, Path]:
    if part is None:
        return "shard", out_dir / ".prepare", out_dir / "manifest.json", out_dir / "summary.json"
    i, n = part
    tag = f"part-{i:04d}-of-{n:04d}"
    return (
        f"p{i:04d}",
        out_dir / ".prepare" / tag,
        out_dir / f"manifest.{tag}.json",
        out_dir / f"summary.{tag}.json",
    )


def _build_components(config: PrepareConfig):
    from ..detect import get_detector
    from ..sentiment import get_sentiment_scorer

    def build(spec, getter):
        return getter(spec) if isinstance(spec, str) else spec

    return (
        build(config.detector, get_detector),
        build(config.scorer, get_sentiment_scorer),
        get_segmenter(config.segmenter),
    )


def prepare(input_path: str | Path, out_dir: str | Path, config: PrepareConfig | None = None) -> dict:
    """Prepare every video under ``input_path`` into shards in ``out_dir``; returns the run summary.

    A rerun skips videos the ledger marks done (failed ones too, unless ``retry_failed``) and
    packs videos a killed run had finished but not yet packed. Writes ``manifest.json`` (corpus)
    and ``summary.json`` (this run's failures), or their ``.part-I-of-N`` variants with ``part``.
    """
    config = config or PrepareConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix, state_dir, manifest_path, summary_path = _paths(out_dir, config.part)
    pending_dir = state_dir / "pending"
    pending_dir.mkdir(parents=True, exist_ok=True)
    remove_temporaries(pending_dir)  # this part's own state: what a killed run was writing
    ledger = Ledger(state_dir / "progress.jsonl")
    t0 = time.time()

    items = discover(input_path)
    if config.part is not None:
        items = items[config.part[0] :: config.part[1]]
    records = ledger.load()
    # an "ok" record whose shard never got its final name (kill between ledger and rename) is redone
    records = {k: r for k, r in records.items() if r["status"] != "ok" or (out_dir / r["shard"]).exists()}
    done = {k for k, r in records.items() if r["status"] != "failed" or not config.retry_failed}
    todo = [it for it in items if it.video_id not in done]
    recovered = [
        it
        for it in todo
        if (pending_dir / f"{it.video_id}.json").exists() and (pending_dir / f"{it.video_id}.tar").exists()
    ]
    recovered_ids = {it.video_id for it in recovered}
    todo = [it for it in todo if it.video_id not in recovered_ids]
    logger.info(
        "%d videos: %d already done, %d finished but unpacked, %d to process",
        len(items),
        len(items) - len(todo) - len(recovered),
        len(recovered),
        len(todo),
    )

    detector, scorer, segmenter = _build_components(config)
    ctx = _Context(detector, scorer, segmenter, config, pending_dir)
    packer = ShardPacker(out_dir, prefix, max_clips=config.shard_clips)
    run_records: list[dict] = []
    waiting: dict[str, dict] = {}  # video_id -> record, clips in the open shard

    def publish(shard) -> None:
        recs = [dict(waiting.pop(v), shard=shard.name) for v in shard.video_ids]
        ledger.append(recs)  # ledger first: a kill before the rename makes the rerun redo them
        packer.publish(shard)
        for r in recs:
            records[r["video_id"]] = r
            for ext in (".tar", ".json"):
                (pending_dir / f"{r['video_id']}{ext}").unlink(missing_ok=True)
        logger.info("wrote %s (%d clips, %.1f min)", shard.name, shard.clips, shard.seconds / 60)

    def accept(record: dict) -> None:
        run_records.append(record)
        if record["status"] != "ok":
            level = logging.WARNING if record["status"] == "failed" else logging.INFO
            logger.log(level, "%s %s: %s", record["status"], record["video"], record["reason"])
            ledger.append([record])
            records[record["video_id"]] = record
            return
        waiting[record["video_id"]] = record
        shard = packer.add(
            pending_dir / f"{record['video_id']}.tar", record["video_id"], record["clips"], record["seconds"]
        )
        if shard is not None:
            publish(shard)

    bar = tqdm(total=len(todo) + len(recovered), desc="videos", unit="video", dynamic_ncols=True)
    clips = 0
    try:
        for it in recovered:
            accept(json.loads((pending_dir / f"{it.video_id}.json").read_text()))
            bar.update()
        for record in _results(todo, ctx, config.workers):
            accept(record)
            clips += record["clips"]
            bar.set_postfix(
                clips=clips, failed=sum(r["status"] == "failed" for r in run_records), refresh=False
            )
            bar.update()
        shard = packer.close_current()
        if shard is not None:
            publish(shard)
    finally:
        bar.close()
        packer.abort()  # only does something if we are leaving on an exception

    settings = config.settings(detector, scorer, segmenter)
    in_part = {it.video_id for it in items}
    manifest = build_manifest((r for k, r in sorted(records.items()) if k in in_part), out_dir, settings)
    if config.part is not None:
        manifest["part"] = {"index": config.part[0], "total": config.part[1]}
    write_json_atomic(manifest_path, manifest)
    plot_manifest(manifest, manifest_path.with_suffix(".png"))
    summary = _summary(items, todo, recovered, run_records, manifest, time.time() - t0)
    write_json_atomic(summary_path, summary)
    logger.info(
        "%d clips (%.2f h) in %d shards; this run: %d ok, %d skipped, %d failed (details in %s)",
        manifest["clips"],
        manifest["hours"],
        len(manifest["shards"]),
        summary["ok"],
        summary["skipped"],
        summary["failed"],
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
        max_workers=workers, mp_context=mp, initializer=_init_worker, initargs=(ctx,)
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
    return {
        "video_id": item.video_id,
        "video": str(item.video),
        "subtitle": item.source,
        "status": "failed",
        "reason": f"{item.video}: the worker process died while processing it (decoder or detector crash)",
        "clips": 0,
        "seconds": 0.0,
        "duration": 0.0,
        "stats": {},
    }


def _summary(items, todo, recovered, run_records, manifest, elapsed) -> dict:
    by_status = Counter(r["status"] for r in run_records)
    return {
        "inputs": len(items),
        "already_done": len(items) - len(todo) - len(recovered),
        "processed": len(run_records),
        "ok": by_status["ok"],
        "skipped": by_status["skipped"],
        "failed": by_status["failed"],
        "clips_written": sum(r["clips"] for r in run_records),
        "video_seconds": round(sum(r["duration"] for r in run_records), 3),
        "elapsed_s": round(elapsed, 2),
        "corpus_clips": manifest["clips"],
        "corpus_hours": manifest["hours"],
        "failures": [
            {"video": r["video"], "reason": r["reason"]} for r in run_records if r["status"] == "failed"
        ],
        "skipped_videos": [
            {"video": r["video"], "reason": r["reason"]} for r in run_records if r["status"] == "skipped"
        ],
    }


def exit_code(summary: dict) -> int:
    """0 if anything is in the corpus or nothing was left to do; 1 if nothing could be processed."""
    if summary["inputs"] == 0:
        return 2
    if summary["processed"] and summary["ok"] == 0 and summary["corpus_clips"] == 0:
        return 1
    return 0
