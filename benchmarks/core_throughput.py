"""encode_video clips/s of every inference path, side by side, against the published implementation's.

    python benchmarks/core_throughput.py [--backbone ViT-B-32] [--batch 4] [--repeats 3] [--threads N]
                                         [--paths torch-fp32,onnxruntime-int8,...] [--no-auto] [--train]
                                         [--more-clips]

The baseline is the published implementation's path: plain eager torch fp32 ``encode_video``
(the same modules and forward as the release). Every other path (torch bf16 autocast, ONNX
Runtime fp32 / int8, OpenVINO fp32 / bf16 / int8, whatever is installed, and ``backend="auto"``)
runs the same clips (real footage held out from the int8 calibration set; also Gaussian noise,
for the cosine only); the paths take turns within each repeat so that load from other processes
on a shared CPU falls on all of them alike, and the best repeat of each is kept. Printed: clips/s,
the ratio to the baseline, and the cosine of the features to the baseline's. Random weights (no
trained weights ship here): speed does not depend on them, int8 accuracy does somewhat. Exports
are made once into a temporary cache (``--cache`` to keep them). ``--train`` adds one training
step (forward + sentiment-guided loss + backward + fused AdamW) in fp32 and bf16. ``--more-clips``
adds the cosine of every path on more real footage of ``../shared`` that no calibration saw (Popeye,
the Intel GIF previews: one clip of each), and the held-out check each int8 export recorded.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _cpu import describe  # benchmarks/ is the script's folder

import emotionclip


def _runners(model, paths, auto: bool, device):
    from emotionclip.backends import load_backend
    from emotionclip.backends.auto import candidates

    gpu = [("torch", "fp32"), ("torch", "bf16"), ("torch", "fp16")]
    wanted = (
        [tuple(p.split("-", 1)) for p in paths] if paths else (gpu if device.type == "cuda" else candidates())
    )
    runners = {}
    for backend, precision in wanted:
        t0 = time.perf_counter()
        try:
            runners[f"{backend}-{precision}"] = load_backend(model, backend, precision, device)
        except Exception as e:  # not installed / cannot run here: say so, go on
            print(f"{backend}-{precision}: unavailable ({type(e).__name__}: {e})")
            continue
        print(f"# prepared {backend}-{precision} in {time.perf_counter() - t0:.1f} s")
    if auto:
        t0 = time.perf_counter()
        chosen = load_backend(model, "auto", device=device)
        print(
            f"# auto chose {chosen.backend} in {time.perf_counter() - t0:.1f} s (measuring, once per machine)"
        )
        runners[f"auto ({chosen.backend})"] = chosen
    return runners


def real_clips(model, batch: int, shared: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``batch`` clips of real footage none of which is in the int8 calibration set (the package's
    sample media): the Intel walkers clip of ``../shared``, half of them with a centred subject box.
    Without ``../shared``: friday at instants the calibration set does not use."""
    from emotionclip.transform import model_transform
    from emotionclip.video_io import probe_video, read_frames_at

    t, tf = model.video_len, model_transform(model)
    path = shared / "media" / "intel" / "one-by-one-person-detection.mp4"
    if not path.is_file():
        from emotionclip.constants import SAMPLE_MEDIA

        path = SAMPLE_MEDIA / "friday.mp4"
    duration = probe_video(path).duration
    times = [duration * (k + 0.3) / (batch * t) for k in range(batch * t)]
    frames = read_frames_at(path, times, short_side=tf.resize)
    h, w = frames.shape[1:3]
    boxes = np.zeros((len(frames), h, w), np.uint8)
    boxes[: len(frames) // 2, h // 6 : 5 * h // 6, w // 4 : 3 * w // 4] = 1
    pixels, masks = tf(frames, boxes)
    return (
        pixels.unflatten(0, (batch, t)),
        masks.float().unflatten(0, (batch, t)),
        f"{path.name}, {batch} x {t} frames",
    )


def more_clips(model, shared: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One clip (T frames spread over the video, a centred subject box on every other frame) of each
    other real video of ``../shared`` no calibration saw: Popeye and the six Intel GIF previews."""
    from emotionclip.transform import model_transform
    from emotionclip.video_io import probe_video, read_frames_at

    t, tf = model.video_len, model_transform(model)
    media = shared / "media"
    paths = sorted((media / "popeye").glob("*.mkv")) + sorted((media / "intel" / "previews").glob("*.gif"))
    clips = {}
    for path in paths:
        try:
            duration = probe_video(path).duration
            frames = read_frames_at(path, [duration * (k + 0.5) / t for k in range(t)], short_side=tf.resize)
        except Exception as e:  # a container this PyAV cannot read: say so, go on
            print(f"# {path.name}: not read ({type(e).__name__}: {e})")
            continue
        h, w = frames.shape[1:3]
        boxes = np.zeros((len(frames), h, w), np.uint8)
        boxes[::2, h // 6 : 5 * h // 6, w // 4 : 3 * w // 4] = 1
        pixels, masks = tf(frames, boxes)
        clips[path.stem[:28]] = (pixels[None], masks.float()[None])
    return clips


def _print_more(model, runners, shared: Path) -> None:
    clips = more_clips(model, shared)
    if not clips:
        print(f"# --more-clips: no clips under {shared / 'media'}")
        return
    names = [n for n in runners if runners[n] is not None]
    print("# cosine to fp32 (video features, one clip of 8 frames each) on more held-out real footage:")
    print(f"{'clip':<30} " + " ".join(f"{n[:18]:>18}" for n in names))
    worst = dict.fromkeys(names, 1.0)
    for clip, (video, mask) in clips.items():
        with torch.inference_mode():
            ref = model.encode_video(video, mask)
        row = []
        for n in names:
            c = float(F.cosine_similarity(runners[n].encode_video(video, mask).float(), ref, dim=-1).min())
            worst[n] = min(worst[n], c)
            row.append(f"{c:18.5f}")
        print(f"{clip:<30} " + " ".join(row))
    print(f"{'(min)':<30} " + " ".join(f"{worst[n]:18.5f}" for n in names))
    for n in names:
        check = getattr(runners[n], "export_config", {}).get("int8_check")
        if check:
            print(
                f"# {n}: the export's own held-out check: min cosine {check['min_cosine']:.5f} "
                f"(mean {check['mean_cosine']:.5f}) on {check['frames']} frames of "
                f"{', '.join(check['videos'])} and variants, budget {check['budget']}: "
                + ("passed (auto may pick it)" if check["passed"] else "failed (auto excludes it)")
            )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="ViT-B-32")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--paths", help="comma-separated backend-precision list (default: all installed)")
    ap.add_argument("--no-auto", action="store_true", help="skip backend='auto'")
    ap.add_argument("--cache", help="keep exports and auto's choice here (default: a temporary folder)")
    ap.add_argument("--train", action="store_true", help="also time one training step (CPU)")
    ap.add_argument("--more-clips", action="store_true", help="cosine on more held-out clips of ../shared")
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared")
    ap.add_argument("--device", default="cpu", help="cpu or cuda (torch fp32 / bf16 / fp16 and auto there)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cache = args.cache or tempfile.mkdtemp(prefix="emotionclip-bench-")
    os.environ["EMOTIONCLIP_CACHE"] = cache

    device = torch.device(args.device)
    model = emotionclip.create_model(args.backbone, device=device).eval()
    b, t, s = args.batch, model.video_len, model.image_size
    video, mask, source = real_clips(model, b, args.shared)
    video, mask = video.to(device), mask.to(device)
    noise = torch.randn(b, t, 3, s, s, device=device)
    print(
        f"# {describe()}" + (f"; GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
    )
    print(
        f"# {args.backbone}, batch {b} x {t} frames, {args.threads} threads, torch {torch.__version__}; "
        "shared CPU: absolute numbers are noisy, ratios come from interleaved runs"
    )

    def baseline():  # the published implementation: eager fp32 encode_video under no autograd
        with torch.inference_mode():
            return model.encode_video(video, mask)

    runners = {
        "published (torch fp32 eager)": None,
        **_runners(model, args.paths and args.paths.split(","), not args.no_auto, device),
    }
    calls = {
        name: (baseline if r is None else (lambda r=r: r.encode_video(video, mask)))
        for name, r in runners.items()
    }
    ref = baseline()
    cosine = {name: float(F.cosine_similarity(fn().float(), ref, dim=-1).min()) for name, fn in calls.items()}
    with torch.inference_mode():
        ref_noise = model.encode_video(noise, mask)
    cosine_noise = {
        name: float(F.cosine_similarity(r_noise.float(), ref_noise, dim=-1).min())
        for name, r_noise in (
            (n, ref_noise if r is None else r.encode_video(noise, mask)) for n, r in runners.items()
        )
    }
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(args.repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    base = best["published (torch fp32 eager)"]
    print(f"# clips: {source}; 'cosine noise': the same paths on Gaussian-noise frames (out of distribution)")
    print(f"{'path':<38} {'clips/s':>8} {'x published':>12} {'min cosine':>11} {'cosine noise':>13}")
    for name in calls:
        print(
            f"{name:<38} {b / best[name]:8.2f} {base / best[name]:12.2f} {cosine[name]:11.5f} "
            f"{cosine_noise[name]:13.5f}"
        )
    if args.more_clips:
        _print_more(model, runners, args.shared)
    if args.train and device.type == "cpu":
        _train_step(model, video, mask, args.repeats)


def _train_step(model, video, mask, repeats: int) -> None:
    from emotionclip.loss import SentimentGuidedClipLoss

    b = video.shape[0]
    tokens = emotionclip.tokenize([f"sentence number {i}" for i in range(b)])
    sentiment = torch.randn(b, 7)
    model.train()
    loss_fn = SentimentGuidedClipLoss(10.0)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-8, betas=(0.98, 0.9), eps=1e-6, weight_decay=0.1, fused=True
    )
    for name, enabled in (("fp32", False), ("bf16", True)):

        def step(enabled=enabled):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                v, x, scale = model(video, mask, tokens)
                loss = loss_fn(v.float(), x.float(), scale, sentiment)
            loss.backward()
            opt.step()

        step()
        sec = min(_timed(step) for _ in range(repeats))
        print(f"train step {name}: {sec:.2f} s per batch of {b} ({b / sec:.2f} clips/s)")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
