"""Prepare throughput: seconds of source video processed per wall-clock second, per core, and per stage.

Runs `emotionclip.prepare.prepare` end to end (decode, sentiment, person detection, JPEG, shards)
on the shared media (friday + the six CREMA-D clips + the Popeye HEVC excerpt, listed in a manifest)
with every filter opened (all sentences that fit 2-10 s become clips, so every clip is decoded and
detected), once per worker count, each in its own Python process. ``--baseline-src DIR`` also runs
the same measurement with another checkout's code (``--baseline-src /work/main/src``) in the same
run, alternating, and prints the ratios: the machine is shared, so only ratios of one run compare.

Per stage (``workers=0`` only, where the stages run in this process): the busy seconds of each stage,
summed over the threads that run it (decode overlaps detection, so they add up to more than the
wall time), and the seconds of video per busy second of that stage.

    python benchmarks/prepare_throughput.py [--workers 0,2] [--detector default] [--scorer default]
        [--baseline-src /work/main/src] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"
STAGES = ("decode", "detect", "sentiment", "jpeg", "tar")


def write_manifest(media: Path, path: Path) -> None:
    rows = [
        {"video": str(media / "friday.mp4"), "subtitle": str(media / "friday.vtt")},
        {
            "video": str(media / "popeye" / "T03-4_pgs.mkv"),
            "subtitle": str(media / "popeye" / "popeye_p1.eng.srt"),
        },
    ]
    rows += [
        {"video": str(p), "text": "Don't forget a jacket"} for p in sorted((media / "cremad").glob("*.flv"))
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


class _Timers:
    """Busy seconds per stage, from wrappers around the pipeline's own functions (thread-safe)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.seconds[stage] += seconds

    def wrap(self, stage: str, fn):
        if getattr(fn, "_timed", False):  # a cached detector or scorer, already wrapped
            return fn

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.add(stage, time.perf_counter() - t0)

        timed._timed = True
        return timed

    def wrap_iter(self, stage: str, fn):
        """The time spent inside a generator's steps (decoding happens there, frame by frame)."""

        def timed(*a, **kw):
            it = fn(*a, **kw)
            while True:
                t0 = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.add(stage, time.perf_counter() - t0)
                yield item

        return timed


def _instrument(timers: _Timers) -> None:
    """Wrap the functions each stage goes through; the same names exist in the baseline's code."""
    from emotionclip.prepare import pipeline

    # this tree decodes a video's clips together (decode_ranges), the baseline one clip at a time
    decode = "decode_ranges" if hasattr(pipeline, "decode_ranges") else "iter_frames"
    setattr(pipeline, decode, timers.wrap_iter("decode", getattr(pipeline, decode)))
    pipeline._encode_jpeg = timers.wrap("jpeg", pipeline._encode_jpeg)
    pipeline.AtomicTar.add = timers.wrap("tar", pipeline.AtomicTar.add)
    build = pipeline._build_components

    def build_timed(config):
        detector, scorer, segmenter = build(config)
        if detector is not None:
            detector.detect = timers.wrap("detect", detector.detect)
        scorer.score = timers.wrap("sentiment", scorer.score)
        return detector, scorer, segmenter

    pipeline._build_components = build_timed


def child(args) -> None:
    """One measurement in this process: prints one JSON line."""
    from emotionclip.prepare import ClipFilter, PrepareConfig, prepare

    logging.basicConfig(level=logging.WARNING)
    timers = _Timers()
    if args.workers == 0:
        _instrument(timers)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "media.jsonl"
        write_manifest(args.media, manifest)
        config = PrepareConfig(
            detector=args.detector,
            scorer=args.scorer,
            workers=args.workers,
            filter=ClipFilter(min_duration=1.5, max_neutral=None, min_person_fraction=0.0),
        )
        prepare(manifest, Path(tmp) / "warm-up", replace_workers(config, 0))  # models loaded, caches warm
        timers.seconds.clear()
        cpu0 = _cpu_seconds()
        t0 = time.perf_counter()
        summary = prepare(manifest, Path(tmp) / "out", config)
        wall = time.perf_counter() - t0
        cpu = _cpu_seconds() - cpu0
    print(
        json.dumps(
            {
                "wall": wall,
                "cpu": cpu,
                "video_s": summary["video_seconds"],
                "clip_s": summary["corpus_hours"] * 3600,
                "clips": summary["clips_written"],
                "videos": summary["ok"],
                "stages": dict(timers.seconds),
            }
        )
    )


def _cpu_seconds() -> float:
    """CPU seconds of this process (all its threads) and of its finished worker processes."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def replace_workers(config, workers: int):
    from dataclasses import replace

    return replace(config, workers=workers)


def run_child(src: str, args, workers: int) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, __file__, "--child", "--workers", str(workers), "--media", str(args.media)]
    cmd += ["--detector", args.detector, "--scorer", args.scorer]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report(label: str, workers: int, r: dict, cores: int) -> None:
    rate = r["video_s"] / r["wall"]
    print(
        f"{label} workers={workers}: {r['videos']} videos, {r['video_s']:.1f} s of video ({r['clip_s']:.1f} s in "
        f"{r['clips']} clips) in {r['wall']:.1f} s wall -> {rate:.2f} video-s/s, {rate / cores:.2f} per core "
        f"({cores} cores), {r['clip_s'] / r['wall']:.2f} clip-s/s"
    )
    if r.get("cpu"):  # the work done, less sensitive than the wall time to what else the machine runs
        print(f"    CPU {r['cpu']:.1f} s -> {r['video_s'] / r['cpu']:.2f} video-s per CPU-s")
    if r["stages"]:
        parts = [
            f"{s} {r['stages'].get(s, 0.0):.2f} s busy ({r['video_s'] / r['stages'][s]:.0f} video-s/s)"
            if r["stages"].get(s)
            else f"{s} 0 s"
            for s in STAGES
        ]
        print("    stages: " + "; ".join(parts))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=SHARED)
    ap.add_argument("--workers", default="0,2", help="comma-separated worker counts to time")
    ap.add_argument("--detector", default="default")
    ap.add_argument("--scorer", default="default")
    ap.add_argument(
        "--baseline-src", help="another checkout's src/ to time side by side (e.g. /work/main/src)"
    )
    ap.add_argument("--repeats", type=int, default=1, help="runs of each; the fastest is reported")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.workers = int(args.workers)
        return child(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _cpu import describe

    print(describe())
    cores = os.cpu_count() or 1
    here = str(Path(__file__).resolve().parents[1] / "src")
    trees = [("this tree", here)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
    for workers in (int(w) for w in args.workers.split(",")):
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            for label, src in trees:  # alternating, so both see the same load
                r = run_child(src, args, workers)
                if label not in best or r["wall"] < best[label]["wall"]:
                    best[label] = r
        for label, _ in trees:
            report(label, workers, best[label], cores)
        if args.baseline_src:
            a, b = best["this tree"], best["baseline"]
            speed = (a["video_s"] / a["wall"]) / (b["video_s"] / b["wall"])
            print(f"  ratio this tree / baseline, workers={workers}: {speed:.2f}x video-s per s per core")
            if a.get("cpu") and b.get("cpu"):
                print(f"  CPU seconds baseline / this tree, workers={workers}: {b['cpu'] / a['cpu']:.2f}x")


if __name__ == "__main__":
    main()
