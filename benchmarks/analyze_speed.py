"""Analysis windows/s (embed_video: decode, detect, transform, encode) per backend, detector on and off.

    python benchmarks/analyze_speed.py [--seconds 60] [--backends torch-fp32,onnxruntime-int8,auto]
                                       [--backbone ViT-B-32] [--detector default] [--cache DIR]
                                       [--per-person]

Videos: a generated 480p clip of ``--seconds`` (PyAV, moving shapes on a textured background;
``--seconds 300`` is a 5-minute video) and the real friday clip of the sample
media (timed ``--repeats`` times, the best kept: it has 5 windows). Window 2 s, stride 1 s, batch 8, as `emotionclip analyze` runs by default. The baseline is
torch fp32 with the detector on (what `analyze` does without --backend). Random weights: speed does
not depend on them. The CPU is shared with other processes: absolute numbers are noisy, compare
ratios within one run.

``--per-person`` adds a table of ``embed_video(..., per_person=True)`` with the detector on: windows/s,
person-windows/s (one more clip per person and window, each with that person's mask alone) and the
time against the same run without per-person rows (friday: three people with ``--detector nanodet``).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch
from _cpu import describe  # benchmarks/ is the script's folder

import emotionclip
from emotionclip.analyze.embed import embed_video
from emotionclip.constants import SAMPLE_MEDIA
from emotionclip.video_io import probe_video


def make_video(path: Path, seconds: float, fps: int = 25, width: int = 854, height: int = 480) -> Path:
    """A synthetic 480p H.264 clip: a textured background with a few moving blocks (decoding costs
    like a real one; nobody for the detector to find)."""
    rng = np.random.default_rng(0)
    background = rng.integers(40, 200, (height, width, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(int(seconds * fps)):
            frame = np.roll(background, i * 2, axis=1)
            for k in range(3):
                x = int((np.sin(i / (20 + 7 * k)) * 0.4 + 0.5) * (width - 120))
                y = int((np.cos(i / (30 + 5 * k)) * 0.4 + 0.5) * (height - 160))
                frame[y : y + 160, x : x + 120] = (60 * k + 50, 200 - 50 * k, 120)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def main() -> None:
    from emotionclip.backends import load_backend
    from emotionclip.detect import resolve_detector

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0, help="length of the generated video")
    ap.add_argument(
        "--backends", default="torch-fp32,torch-bf16,onnxruntime-fp32,onnxruntime-int8,openvino-int8,auto"
    )
    ap.add_argument("--videos", default="generated,friday", help="which of generated,friday to time")
    ap.add_argument("--repeats", type=int, default=3, help="runs of a short clip; the best is kept")
    ap.add_argument("--backbone", default="ViT-B-32")
    ap.add_argument("--detector", default="default")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--cache", help="keep exports and auto's choice here (default: a temporary folder)")
    ap.add_argument("--per-person", action="store_true", help="also time per-person analysis (detector on)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["EMOTIONCLIP_CACHE"] = args.cache or tempfile.mkdtemp(prefix="emotionclip-bench-")
    print(f"# {describe()}")
    print(
        f"# {args.backbone}, {args.threads} threads; shared CPU: absolute numbers are noisy, compare ratios"
    )

    torch.manual_seed(0)
    model = emotionclip.create_model(args.backbone).eval()
    tmp = Path(tempfile.mkdtemp(prefix="emotionclip-analyze-speed-"))
    t0 = time.perf_counter()
    videos = {}
    if "generated" in args.videos:
        videos[f"generated {args.seconds:g} s 480p"] = make_video(tmp / "generated.mp4", args.seconds)
    if "friday" in args.videos:
        videos["friday (real)"] = SAMPLE_MEDIA / "friday.mp4"
    print(f"# generated the video in {time.perf_counter() - t0:.0f} s")
    detectors = {"on": resolve_detector(args.detector), "off": None}
    runners = {}
    for name in args.backends.split(","):
        backend, _, precision = name.partition("-")
        t0 = time.perf_counter()
        try:
            runners[name] = load_backend(model, backend, precision or None)
        except Exception as e:  # not installed here: say so and go on
            print(f"{name}: unavailable ({type(e).__name__}: {e})")
            continue
        label = f"{name} -> {runners[name].backend}" if backend == "auto" else name
        print(f"# prepared {label} in {time.perf_counter() - t0:.0f} s")
    for runner in runners.values():  # warm-up: detector and runtime start-up are not per window
        for det in detectors.values():
            embed_video(runner, SAMPLE_MEDIA / "friday.mp4", detector=det, batch_size=8, keyframes=0)
    # a clip of under 100 windows is timed args.repeats times (the best kept), a longer one once
    repeats = {n: 1 if probe_video(p).duration > 100 else args.repeats for n, p in videos.items()}
    results = {}
    for video_name, path in videos.items():
        for name, runner in runners.items():
            for det_name, det in detectors.items():
                best = 0.0
                for _ in range(repeats[video_name]):  # short clips: best of a few, as one run is noise
                    t0 = time.perf_counter()
                    emb = embed_video(runner, path, detector=det, batch_size=8, keyframes=0)
                    best = max(best, len(emb.starts) / (time.perf_counter() - t0))
                results[video_name, name, det_name] = best
            if args.per_person:
                best, rows, persons = 0.0, 0, 0
                for _ in range(repeats[video_name]):
                    t0 = time.perf_counter()
                    emb = embed_video(
                        runner, path, detector=detectors["on"], batch_size=8, keyframes=0, per_person=True
                    )
                    took = time.perf_counter() - t0
                    if len(emb.starts) / took > best:
                        best, rows, persons = (
                            len(emb.starts) / took,
                            len(emb.persons) / took,
                            len(emb.persons.ids),
                        )
                results[video_name, name, "persons"] = (best, rows, persons)
    for video_name in videos:
        base = results.get((video_name, "torch-fp32", "on"))
        print(f"\n{video_name}: windows/s (x torch fp32 with the detector)")
        print(f"{'backend':<22} {'detector on':>18} {'detector off':>18} {'on/off':>7}")
        for name in runners:
            on, off = results[video_name, name, "on"], results[video_name, name, "off"]
            x_on, x_off = (f" ({on / base:4.2f}x)", f" ({off / base:4.2f}x)") if base else ("", "")
            print(f"{name:<22} {on:10.2f}{x_on:>8} {off:10.2f}{x_off:>8} {on / off:7.2f}")
        if args.per_person:
            print(f"\n{video_name}: --per-person, detector on ({args.detector})")
            print(
                f"{'backend':<22} {'persons':>7} {'windows/s':>10} {'person-windows/s':>17} {'time x union only':>18}"
            )
            for name in runners:
                wins, rows, persons = results[video_name, name, "persons"]
                union = results[video_name, name, "on"]
                print(f"{name:<22} {persons:7d} {wins:10.2f} {rows:17.2f} {union / wins:18.2f}")


if __name__ == "__main__":
    main()
