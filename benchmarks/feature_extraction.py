"""Feature-extraction throughput of the evaluation pipeline: decode the model's ``video_len`` frames
per clip with PyAV (in prefetch threads), transform pixels + subject mask, encode with the model.

Generates ``--clips`` short videos (``--size`` WxH, ``--seconds`` long) in a temporary BoLD-style
list, then times :func:`emotionclip.evaluate.extract_features` side by side in one run: each
``--precisions`` entry with ``--workers`` decode threads, and fp32 with no decode threads. The CPU is
shared, so the ratios are the result; the absolute clips/s are noisy. Usage::

    python benchmarks/feature_extraction.py [--checkpoint CKPT | --backbone tiny] [--clips 64]
        [--size 640x360] [--batch-size 16] [--workers 2] [--precisions fp32,bf16] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from _cpu import describe  # benchmarks/ is the script's folder

import emotionclip
from emotionclip.evaluate.datasets import Sample
from emotionclip.evaluate.features import Protocol, extract_features


def write_clip(path: Path, width: int, height: int, seconds: float, fps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        for i in range(int(seconds * fps)):
            frame = np.roll(base, 4 * i, axis=1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", help="model to encode with (default: a random --backbone model)")
    ap.add_argument("--backbone", default="tiny", help="with no checkpoint: 'tiny' or e.g. 'ViT-B-32'")
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated emotionclip.precision names")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    if args.checkpoint:
        model = emotionclip.load_model(args.checkpoint, device=args.device)
    else:
        model = emotionclip.create_model(
            backbone=args.backbone, video_len=8, head_layers=1 if args.backbone == "tiny" else 6
        )
        model = model.to(args.device).eval()
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.clips):
            p = Path(tmp) / f"clip{i}.mp4"
            write_clip(p, width, height, args.seconds, args.fps, i)
            paths.append(p)
        box = {
            f: np.array([[width * 0.2, height * 0.1, width * 0.7, height * 0.95, 1.0]], np.float32)
            for f in range(int(args.seconds * args.fps) + 1)
        }
        samples = [Sample(key=str(p), path=str(p), labels={}, frame_boxes=box) for p in paths]

        def run(precision: str, workers: int, todo=samples) -> tuple[float, int]:
            protocol = Protocol(num_frames=model.video_len, image_size=model.image_size, precision=precision)
            t = time.perf_counter()
            feats = extract_features(
                model,
                todo,
                protocol,
                batch_size=args.batch_size,
                num_workers=workers,
                device=args.device,
                desc=f"{precision}, {workers} workers",
            )
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            return len(feats.keys) / (time.perf_counter() - t), len(feats.failed)

        precisions = args.precisions.split(",")
        run(precisions[0], args.workers, samples[: args.batch_size])  # warm-up
        rates = {(p, args.workers): run(p, args.workers) for p in precisions}
        rates[("fp32", 0)] = run("fp32", 0)
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(describe())
    print(
        f"model {args.checkpoint or args.backbone} ({n_params:.1f} M params), {model.video_len} frames/clip, "
        f"device {args.device}; {args.clips} clips of {width}x{height}, {args.seconds:g} s"
    )
    base = rates[("fp32", 0)][0]
    for (precision, workers), (rate, failed) in rates.items():
        print(
            f"{precision:5s} {workers} decode workers: {rate:6.1f} clips/s = {rate / base:.2f}x fp32 without "
            f"workers ({failed} failed)"
        )


if __name__ == "__main__":
    main()
