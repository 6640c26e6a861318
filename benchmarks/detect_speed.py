"""Speed and per-frame counts of the face detector (`faces`, BlazeFace) on the shared sample media.

    python benchmarks/detect_speed.py [--media ../shared/media] [--frames 48] [--threads 1] [--png boxes.png]

Prints wall and CPU ms/frame (frames at short side 256, as prepare stores them; all sampled frames of
a clip in one call) with and without the extra tiles, and how many subjects each sampled frame got.
CPU time is the steadier number on a shared machine. ``--png`` saves
friday frames with the boxes drawn, to judge precision and recall by eye.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from emotionclip.detect import get_detector
from emotionclip.video_io import probe_video, read_frames_at, uniform_times

ROOT = Path(__file__).resolve().parents[1]


def montage(frames: np.ndarray, boxes: list[np.ndarray], path: Path, cols: int = 4) -> None:
    tiles = []
    for i, (frame, b) in enumerate(zip(frames, boxes)):
        im = Image.fromarray(frame)
        draw = ImageDraw.Draw(im)
        for x1, y1, x2, y2, s in b:
            draw.rectangle([x1, y1, x2, y2], outline=(255, 0, 0), width=2)
            draw.text((x1 + 3, y1 + 2), f"{s:.2f}", fill=(255, 255, 0))
        draw.text((4, 4), f"#{i}", fill=(0, 255, 0))
        tiles.append(im)
    w, h = tiles[0].size
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (w * cols, h * rows))
    for i, im in enumerate(tiles):
        sheet.paste(im, ((i % cols) * w, (i // cols) * h))
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--media", type=Path, default=ROOT.parent / "shared" / "media")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1, help="TFLite and torch threads")
    ap.add_argument("--png", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    videos = [
        args.media / "friday.mp4",
        args.media / "flower.mp4",
        *sorted((args.media / "cremad").glob("*.flv")),
    ]
    # from 0.1 s: video_io.read_frames_at cannot seek these FLV files to t < 0.03 s (reported to the lead)
    clips = {
        p.name: read_frames_at(p, uniform_times(0.1, probe_video(p).duration, args.frames), short_side=256)
        for p in videos
    }
    for tiles in (True, False):
        det = get_detector("faces", tiles=tiles, num_threads=args.threads)
        det.detect(clips["friday.mp4"][:4])  # warm-up: interpreter creation
        wall = cpu = total_n = 0
        for name, frames in clips.items():
            t0, c0 = time.perf_counter(), time.process_time()
            boxes = det.detect(frames)
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            total_n += len(frames)
            counts = np.array([len(b) for b in boxes])
            print(
                f"{det.name:28s} {name:22s} {frames.shape[2]}x{frames.shape[1]}  subjects/frame "
                f"{''.join(map(str, counts.clip(0, 9)))}  frames with >=1: {(counts >= 1).mean():.2f} >=2: {(counts >= 2).mean():.2f}"
            )
            if args.png is not None and tiles and name == "friday.mp4":
                montage(
                    frames[:: max(1, len(frames) // 16)][:16],
                    boxes[:: max(1, len(frames) // 16)][:16],
                    args.png,
                )
        print(
            f"{det.name}: {1000 * wall / total_n:.1f} ms/frame wall, {1000 * cpu / total_n:.1f} ms/frame CPU "
            f"over {total_n} frames, {args.threads} thread(s)"
        )


if __name__ == "__main__":
    main()
