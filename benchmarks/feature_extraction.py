"""Feature-extraction throughput (clips/s) of the evaluation pipeline: decode 8 (video_len) frames
per clip with PyAV, transform pixels + subject mask, encode with the model.

Generates ``--clips`` short videos (``--size`` WxH, ``--seconds`` long) in a temporary BoLD-style
list, then times :func:`emotionclip.evaluate.extract_features`. Usage::

    python benchmarks/feature_extraction.py [--checkpoint CKPT | --backbone tiny] [--clips 64]
        [--size 640x360] [--batch-size 16] [--workers 2] [--device cuda]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

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
    protocol = Protocol(num_frames=model.video_len, image_size=model.image_size)
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
        extract_features(
            model,
            samples[: args.batch_size],
            protocol,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            desc="warm-up",
        )
        t = time.perf_counter()
        feats = extract_features(
            model,
            samples,
            protocol,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            desc="timed",
        )
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
    n_params = sum(p.numel() for p in model.parameters()) / 1e6
    print(
        f"model {args.checkpoint or args.backbone} ({n_params:.1f} M params), {model.video_len} frames/clip, "
        f"device {args.device}, torch threads {torch.get_num_threads()}, decode workers {args.workers}"
    )
    print(
        f"{len(feats.keys)} clips of {width}x{height}, {args.seconds:g} s: {dt:.2f} s -> {len(feats.keys) / dt:.1f} clips/s"
        f" ({len(feats.failed)} failed)"
    )


if __name__ == "__main__":
    main()
