"""How well do training batches mix the corpus? Distinct source videos per batch vs uniform sampling.

A simulated corpus (default 100,000 clips from 1,000 videos, 100 clips each) is written as prepare
writes it — whole videos in time order, packed into shards of about 500 clips — with metadata-only
samples (the .json and a 1-byte placeholder frame, never decoded). Batches of 128 are read through the real
training loader (`emotionclip.shards.reader.make_train_loader`, ``decode=False``) in:

- ``stream``: the previous default — shuffled shard order, a 500-clip shuffle buffer, 2 workers;
- ``uniform``: the new default — a permutation of the whole index per epoch (the release's
  ``DataLoader(shuffle=True)`` / ``DistributedSampler``), on 1 rank and as rank 1 of 4.

The score is the mean number of distinct videos per batch divided by its expectation under
uniform sampling without replacement (exact hypergeometric value). The numbers do not depend on
the CPU; the timings printed alongside are wall-clock on a shared machine (noisy).

    python benchmarks/batch_mixing.py [--videos 1000 --clips-per-video 100 --batches 100]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from _cpu import describe  # benchmarks/ is the script's folder


def write_corpus(folder: Path, videos: int, clips_per_video: int, shard_clips: int = 500) -> list[str]:
    """Shards in prepare's layout: videos in order, each video's clips in time order, never split."""
    from emotionclip.shards.writer import sample_members, write_tar_atomic

    urls, members, in_shard = [], [], 0
    logits = [0.0, 0.0, 0.0, 4.0, 0.0, 0.0, 0.0]
    for v in range(videos):
        for c in range(clips_per_video):
            meta = {
                "video_id": f"video{v:05d}",
                "start": 2.0 * c,
                "end": 2.0 * c + 2.0,
                "sentiment_logits": logits,
                "neutral": 0.01,
                "has_person": 1.0,
            }
            sample = sample_members(f"video{v:05d}__c{c:04d}", [b"\xff"], [[]], "a sentence", meta)
            members += [m for m in sample if not m[0].endswith((".boxes.json", ".txt"))]  # what is read
        in_shard += clips_per_video
        if in_shard >= shard_clips or v == videos - 1:
            path = folder / f"shard-{len(urls):06d}.tar"
            write_tar_atomic(path, members)
            urls.append(str(path))
            members, in_shard = [], 0
    return urls


def expected_distinct(counts: np.ndarray, batch: int) -> float:
    """E[distinct videos] in ``batch`` clips drawn without replacement from the whole corpus."""
    n = counts.sum()
    i = np.arange(batch)
    miss = [np.exp(np.sum(np.log(np.maximum(n - c - i, 0) + 1e-300) - np.log(n - i))) for c in counts]
    return float(np.sum(1.0 - np.asarray(miss)))


def mean_distinct(loader, batches: int) -> tuple[float, int]:
    seen = []
    for k, batch in enumerate(loader):
        if k >= batches:
            break
        seen.append(len(set(batch["video_id"])))
    return float(np.mean(seen)), len(seen)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--clips-per-video", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--batches", type=int, default=100, help="batches measured per design")
    args = ap.parse_args()

    from emotionclip.shards.reader import build_index, make_train_loader

    print(describe())
    print("timings are wall-clock on a CPU shared with other jobs: noisy, for orientation only")
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        urls = write_corpus(Path(tmp), args.videos, args.clips_per_video)
        clips = args.videos * args.clips_per_video
        print(
            f"corpus: {clips} clips from {args.videos} videos in {len(urls)} shards ({time.perf_counter() - t0:.1f} s)"
        )
        t0 = time.perf_counter()
        index = build_index(urls)
        print(f"index of {len(index)} samples built in {time.perf_counter() - t0:.1f} s")
        counts = np.bincount(index.video)
        uniform = expected_distinct(counts, args.batch_size)
        print(f"uniform sampling: {uniform:.2f} distinct videos per batch of {args.batch_size} (expected)")

        common = dict(batch_size=args.batch_size, decode=False, seed=0, epoch=0)
        designs = {
            "stream (previous default: shard order + 500-clip buffer, 2 workers)": lambda: make_train_loader(
                urls, order="stream", num_workers=2, rank=0, world_size=1, **common
            ),
            "uniform, 1 rank, 2 workers (new default)": lambda: make_train_loader(
                urls, order="uniform", num_workers=2, rank=0, world_size=1, index=index, **common
            ),
            "uniform, rank 1 of 4, 2 workers": lambda: make_train_loader(
                urls, order="uniform", num_workers=2, rank=1, world_size=4, index=index, **common
            ),
        }
        results = {}
        for name, build in designs.items():
            t0 = time.perf_counter()
            mean, n = mean_distinct(build(), args.batches)
            results[name] = mean / uniform
            print(
                f"{name}: {mean:.2f} distinct videos per batch over {n} batches = "
                f"{mean / uniform:.3f} of uniform ({time.perf_counter() - t0:.1f} s)"
            )
        print(json.dumps({k.split(" (")[0].split(",")[0]: round(v, 4) for k, v in results.items()}))
        print(f"batch mixing: {results['uniform, 1 rank, 2 workers (new default)']:.3f} of uniform")


if __name__ == "__main__":
    main()
