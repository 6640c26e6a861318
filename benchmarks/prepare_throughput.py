"""Prepare throughput: seconds of source video processed per wall-clock second, per worker.

Runs `emotionclip.prepare.prepare` end to end (decode, sentiment, person detection, JPEG, shards)
on the shared media (friday + the six CREMA-D clips + the Popeye HEVC excerpt, listed in a manifest)
with every filter opened (all sentences that fit 2-10 s become clips, so every clip is decoded and
detected), once per worker count.

    python benchmarks/prepare_throughput.py [--workers 0,2] [--detector default] [--scorer default]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from emotionclip.prepare import ClipFilter, PrepareConfig, prepare

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--media", type=Path, default=SHARED)
    ap.add_argument("--workers", default="0,2", help="comma-separated worker counts to time")
    ap.add_argument("--detector", default="default")
    ap.add_argument("--scorer", default="default")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "media.jsonl"
        write_manifest(args.media, manifest)
        for workers in (int(w) for w in args.workers.split(",")):
            config = PrepareConfig(
                detector=args.detector,
                scorer=args.scorer,
                workers=workers,
                filter=ClipFilter(min_duration=1.5, max_neutral=None, min_person_fraction=0.0),
            )
            t0 = time.perf_counter()
            summary = prepare(manifest, Path(tmp) / f"out-{workers}", config)
            wall = time.perf_counter() - t0
            video_s = summary["video_seconds"]
            clip_s = summary["corpus_hours"] * 3600
            per = max(1, workers)
            print(
                f"workers={workers}: {summary['ok']} videos, {video_s:.1f} s of video ({clip_s:.1f} s in "
                f"{summary['clips_written']} clips) in {wall:.1f} s wall -> {video_s / wall:.2f} video-s/s "
                f"({video_s / wall / per:.2f} per worker), {clip_s / wall:.2f} clip-s/s"
            )


if __name__ == "__main__":
    main()
