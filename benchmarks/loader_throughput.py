"""Training data-loader throughput: clips per second with 0 and 2 DataLoader workers.

Reads shards given with --shards (a prepared folder, manifest or brace pattern); without it,
prepares a small corpus from the shared CREMA-D clips first (person boxes from a JSON file so
that the timing is about the loader). Each clip: 8 JPEG decodes, masks, random crop, ImageNet
normalisation, tokenization.

    python benchmarks/loader_throughput.py [--shards DIR] [--batches 20] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

from emotionclip.prepare import ClipFilter, PrepareConfig, make_train_loader, prepare

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "media"


def build_corpus(tmp: Path, scorer: str) -> Path:
    names = [p.stem for p in sorted((SHARED / "cremad").glob("*.flv"))]
    frames = [{"t": k / 16, "boxes": [[150, 40, 330, 300, 0.9]]} for k in range(48)]
    boxes = {
        "format": "emotionclip-boxes/1",
        "videos": {n: {"width": 480, "height": 360, "frames": frames} for n in names},
    }
    (tmp / "boxes.json").write_text(json.dumps(boxes))
    config = PrepareConfig(
        detector=f"json:{tmp / 'boxes.json'}",
        scorer=scorer,
        shard_clips=2,
        filter=ClipFilter(min_duration=1.0, max_neutral=None, min_person_fraction=0.0),
    )
    prepare(SHARED / "cremad" / "transcript.csv", tmp / "shards", config)
    return tmp / "shards"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", default=None)
    ap.add_argument("--scorer", default="default", help="scorer used when building the corpus")
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", default="0,2")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        shards = args.shards or build_corpus(Path(tmp), args.scorer)
        for workers in (int(w) for w in args.workers.split(",")):
            loader = make_train_loader(
                shards,
                batch_size=args.batch_size,
                num_workers=workers,
                resampled=True,
                epoch_batches=args.batches + 2 * max(1, workers),
            )
            it = iter(loader)
            for _ in range(max(1, workers)):  # warm-up: worker start-up is not throughput
                next(it)
            t0 = time.perf_counter()
            n = 0
            for _ in range(args.batches):
                n += len(next(it)["key"])
            wall = time.perf_counter() - t0
            del it, loader  # stop the workers before the temporary shards go away
            print(
                f"workers={workers}: {n} clips in {wall:.2f} s -> {n / wall:.1f} clips/s "
                f"(batch {args.batch_size}, 8 frames, 224 px)"
            )


if __name__ == "__main__":
    main()
