"""encode_video throughput and one training step for the full ViT-B/32 EmotionCLIP on this machine.

    python benchmarks/core_throughput.py [--batch 4] [--frames 8] [--repeats 3] [--threads N]

Prints clips/s for inference (fp32, bf16 autocast), the seconds of one training step
(forward + sentiment-guided loss + backward + AdamW) and its clips/s, and the cosine similarity of
bf16 features to fp32 ones. Random weights: speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn.functional as F

import emotionclip
from emotionclip.loss import SentimentGuidedClipLoss


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--backbone", default="ViT-B-32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = emotionclip.create_model(args.backbone, video_len=args.frames).eval()
    b, t = args.batch, args.frames
    video = torch.randn(b, t, 3, 224, 224)
    mask = torch.rand(b, t, 224, 224) > 0.5
    tokens = emotionclip.tokenize([f"sentence number {i}" for i in range(b)])
    sentiment = torch.randn(b, 7)
    print(
        f"# {args.backbone}, batch {b} x {t} frames, {args.threads} threads, torch {torch.__version__}, "
        f"{platform.processor() or platform.machine()}"
    )

    results = {}
    with torch.inference_mode():
        ref = model.encode_video(video, mask)
        for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):

            def run(dtype=dtype):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                    return model.encode_video(video, mask)

            sec = _time(run, args.repeats)
            results[name] = run().float()
            print(f"encode_video {name}: {b / sec:.2f} clips/s ({sec:.2f} s per batch of {b})")
    cos = F.cosine_similarity(results["bf16"], ref, dim=-1)
    print(f"bf16 vs fp32 features: cosine similarity mean {cos.mean():.5f}, min {cos.min():.5f}")

    model.train()
    loss_fn = SentimentGuidedClipLoss(10.0)
    # the trainer's optimizer: fused AdamW (CPU and CUDA kernels)
    opt = torch.optim.AdamW(
        model.parameters(), lr=1e-8, betas=(0.98, 0.9), eps=1e-6, weight_decay=0.1, fused=True
    )
    for name, dtype in (("fp32", None), ("bf16", torch.bfloat16)):

        def step(dtype=dtype):
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype is not None):
                v, tx, scale = model(video, mask, tokens)
                loss = loss_fn(v, tx, scale, sentiment)
            loss.backward()
            opt.step()

        sec = _time(step, args.repeats)
        print(
            f"train step {name} (fwd + loss + bwd + AdamW): {sec:.2f} s per batch of {b} = {b / sec:.2f} clips/s"
        )


if __name__ == "__main__":
    main()
