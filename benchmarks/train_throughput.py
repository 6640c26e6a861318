"""Training throughput of EmotionCLIP: clips/s, peak memory and model FLOP utilisation (MFU).

One full training step as `emotionclip train` runs it (forward of both towers + temporal head,
sentiment-guided loss, backward, AdamW with the release's parameter groups, logit-scale clamp) on
random inputs, for each precision x batch size, each in a fresh subprocess so that peak memory is
per configuration. MFU = clips/s x FLOP per training clip / peak FLOP/s. FLOP per clip: 230 GFLOP
for ViT-B/32 with 8 frames, as torch's FlopCounterMode counts one step (``--count-flops`` measures
it for the configuration at hand). The issue's "about 115 GFLOP" is the same work counted in
multiply-adds (38 G forward x 3); peaks count an FMA as 2 FLOP, so 230 is the consistent figure
(the MFU column with 115 would be half). Peak FLOP/s: the GPU's dense bf16/fp32 datasheet figure (H100/H200), or on
CPU the best matmul rate measured here (so CPU MFU is "of what this CPU reaches in a matmul").

    python benchmarks/train_throughput.py                                   # CPU: fp32 + bf16, batch 1, 2
    python benchmarks/train_throughput.py --batch-sizes 64,128 --precisions bf16 --compile   # GPU
    python benchmarks/train_throughput.py --data 'corpus/shard-{000000..000009}.tar' --workers 8  # + loop

With ``--data`` each configuration is also run through the real loop (`emotionclip.train.train`
on the shards: loader, host-to-device copy, the per-step flag exchange, logging) and the ratio
loop/step says how much of the step rate the input pipeline keeps. Speeds are only comparable as
ratios within one run: the CPU may be shared with other jobs (the header prints its model and flags).

Published implementation, for comparison: 0.60 clips/s for an fp32 train step on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from _cpu import describe  # benchmarks/ is the script's folder

GFLOP_PER_TRAIN_CLIP = 230.0  # ViT-B/32, 8 frames + text, forward + backward, FMA = 2 FLOP (FlopCounterMode)
# dense (no sparsity) datasheet peaks, FLOP/s
# (name fragment, peaks): the first fragment found in the device name wins, so variants come first
GPU_PEAKS = (
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "fp32": 51e12}),
    ("H100 NVL", {"bf16": 835e12, "fp16": 835e12, "fp32": 60e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),  # SXM5
    ("H200", {"bf16": 989e12, "fp16": 989e12, "fp32": 67e12}),
    ("A100", {"bf16": 312e12, "fp16": 312e12, "fp32": 19.5e12}),
)


def one_config(args: argparse.Namespace) -> dict:
    """Time a training step for one (precision, batch size); runs in its own process."""
    from emotionclip.train import TrainConfig
    from emotionclip.train.distributed import DistEnv
    from emotionclip.train.optim import build_optimizer
    from emotionclip.train.step import TrainStep, build_model, wrap_model

    device = torch.device(args.device)
    cfg = TrainConfig(
        backbone=args.backbone,
        pretrained=None,
        video_len=args.frames,
        batch_size=args.batch,
        precision=args.precision,
        grad_checkpointing=args.grad_checkpointing,
        compile=args.compile,
        device=device.type,
    )
    env = DistEnv(device=device)
    model = build_model(cfg, device).train()
    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
    size = model.image_size
    g = torch.Generator().manual_seed(0)
    batch = {  # uint8 frames and mask as the loader ships them; normalised on the device in the step
        "video": torch.randint(
            0, 256, (args.batch, args.frames, 3, size, size), dtype=torch.uint8, generator=g
        ),
        "video_mask": (torch.rand(args.batch, args.frames, size, size, generator=g) > 0.5).to(torch.uint8),
        "tokens": torch.randint(1, 49407, (args.batch, 77), generator=g),
        "sentiment_logits": torch.randn(args.batch, 7, generator=g),
    }
    batch = {k: v.to(device) for k, v in batch.items()}

    flop_per_clip = None
    if args.count_flops:  # on the eager model: FlopCounterMode does not see inside compiled graphs
        from torch.utils.flop_counter import FlopCounterMode

        eager = TrainStep(model, model, optimizer, cfg, env, scaler)
        counter = FlopCounterMode(display=False)
        with counter:
            eager(batch)
        flop_per_clip = counter.get_total_flops() / args.batch
    step = TrainStep(model, wrap_model(model, cfg, env), optimizer, cfg, env, scaler)  # the loop's own step

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step(batch)
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step(batch)
    sync()
    seconds = (time.perf_counter() - start) / args.steps
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    result = {
        "precision": args.precision,
        "batch": args.batch,
        "step_s": seconds,
        "clips_per_s": args.batch / seconds,
        "peak_mem_mb": peak_mb,
        "flop_per_clip": flop_per_clip,
    }
    if args.data:
        del model, optimizer, step  # free the step's memory before the loop builds its own
        result.update(loop_throughput(args))
    return result


def cpu_matmul_peak(precision: str) -> float:
    """Best FLOP/s of a square matmul on this CPU in the given precision (the CPU MFU reference)."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    n = 2048
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def gpu_peak(name: str, precision: str) -> tuple[float, str]:
    for key, peaks in GPU_PEAKS:
        if key in name:
            return peaks[precision], f"{key} datasheet"
    return float("nan"), f"unknown GPU {name} (pass --peak-tflops)"


def peak_flops(device: str, precision: str, override_tflops: float | None) -> tuple[float, str]:
    if override_tflops:
        return override_tflops * 1e12, "given"
    if device.startswith("cuda"):
        return gpu_peak(torch.cuda.get_device_name(torch.device(device)), precision)  # the chosen GPU
    return cpu_matmul_peak(precision), "measured matmul"


def loop_throughput(args: argparse.Namespace) -> dict:
    """The real training loop on shards: clips/s between the end of the warm-up and the last step,
    timed by the evaluator hook (called after every step)."""
    import tempfile

    from emotionclip.train import TrainConfig, train

    stamps: list[float] = []

    def clock(model, step):
        stamps.append(time.perf_counter())
        return {}

    with tempfile.TemporaryDirectory() as run:
        cfg = TrainConfig(
            data=args.data,
            output=str(Path(run) / "run"),
            backbone=args.backbone,
            pretrained=None,
            video_len=args.frames,
            batch_size=args.batch,
            workers=args.workers,
            precision=args.precision,
            grad_checkpointing=args.grad_checkpointing,
            compile=args.compile,
            device=args.device.split(":")[0],
            max_steps=args.warmup + args.steps,
            steps_per_epoch=args.warmup + args.steps,
            neutral_threshold=1.0,
            warmup_steps=0,
            save_every=0,
            eval_every=1,
            log_every=10**6,
        )
        train(cfg, evaluator=clock)
    seconds = (stamps[-1] - stamps[args.warmup - 1]) / args.steps
    return {"loop_step_s": seconds, "loop_clips_per_s": args.batch / seconds}


def loader_throughput(args: argparse.Namespace) -> float:
    from emotionclip.shards.reader import make_train_loader
    from emotionclip.train.data import expand_shards

    loader = make_train_loader(
        expand_shards(args.data),
        batch_size=args.loader_batch,
        num_workers=args.workers,
        video_len=args.frames,
    )
    it = iter(loader)
    next(it)  # worker start-up
    clips, start = 0, time.perf_counter()
    for _ in range(args.loader_batches):
        batch = next(it, None)
        if batch is None:
            break
        clips += batch["video"].shape[0]
    if not clips:
        return float("nan")  # the corpus holds fewer than two loader batches
    return clips / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--backbone", default="ViT-B-32")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--batch-sizes", default=None, help="comma list (default: 1,2 on CPU, 32,64,128 on GPU)")
    p.add_argument(
        "--precisions",
        default=None,
        help="comma list of fp32, bf16, fp16 (default: fp32,bf16 on CPU, bf16 on GPU)",
    )
    p.add_argument("--steps", type=int, default=None, help="timed steps (default: 2 on CPU, 20 on GPU)")
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 5 on GPU)"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--count-flops", action="store_true", help="measure FLOP per clip with FlopCounterMode")
    p.add_argument(
        "--gflop-per-clip",
        type=float,
        default=GFLOP_PER_TRAIN_CLIP,
        help="training FLOP per clip for MFU (ignored with --count-flops)",
    )
    p.add_argument("--peak-tflops", type=float, default=None, help="peak to compute MFU against")
    p.add_argument(
        "--data", default=None, help="shards: also run the real loop on them, and the loader alone"
    )
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--loader-batch", type=int, default=32)
    p.add_argument("--loader-batches", type=int, default=10)
    p.add_argument("--one", nargs=2, metavar=("PRECISION", "BATCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    args.steps = args.steps or (20 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (5 if gpu else 1)

    if args.one:
        args.precision, args.batch = args.one[0], int(args.one[1])
        print(json.dumps(one_config(args)))
        return

    batch_sizes = [int(b) for b in (args.batch_sizes or ("32,64,128" if gpu else "1,2")).split(",")]
    precisions = (args.precisions or ("bf16" if gpu else "fp32,bf16")).split(",")
    where = torch.cuda.get_device_name(torch.device(args.device)) if gpu else "CPU"
    print(
        f"# EmotionCLIP training step, {args.backbone}, {args.frames} frames, random init, on {where}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; compile={args.compile} "
        f"grad_checkpointing={args.grad_checkpointing}\n# {describe()}"
    )
    loop_head = f" {'loop clips/s':>12} {'loop/step':>9}" if args.data else ""
    print(
        f"{'precision':>9} {'batch':>5} {'step s':>8} {'clips/s':>8} {'peak MB':>9} {'GFLOP/clip':>10} {'MFU':>7}"
        + loop_head
    )
    for precision in precisions:
        peak, peak_source = peak_flops(args.device, precision, args.peak_tflops)
        for batch in batch_sizes:
            cmd = [
                sys.executable,
                __file__,
                "--one",
                precision,
                str(batch),
                "--device",
                args.device,
                "--backbone",
                args.backbone,
                "--frames",
                str(args.frames),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                *(("--data", args.data, "--workers", str(args.workers)) if args.data else ()),
            ] + [
                f"--{f}"
                for f in ("compile", "grad-checkpointing", "count-flops")
                if getattr(args, f.replace("-", "_"))
            ]
            done = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
            if done.returncode != 0:
                print(f"{precision:>9} {batch:>5}  failed: {done.stderr.strip().splitlines()[-1:]}")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            # the 230 GFLOP figure is ViT-B/32's: other backbones need --count-flops (or --gflop-per-clip)
            known = args.backbone == "ViT-B-32" or args.gflop_per_clip != GFLOP_PER_TRAIN_CLIP
            gflop = (
                r["flop_per_clip"] / 1e9
                if r["flop_per_clip"]
                else args.gflop_per_clip
                if known
                else float("nan")
            )
            mfu = r["clips_per_s"] * gflop * 1e9 / peak
            loop = (
                f" {r['loop_clips_per_s']:>12.2f} {r['loop_clips_per_s'] / r['clips_per_s']:>9.2f}"
                if args.data
                else ""
            )
            print(
                f"{precision:>9} {batch:>5} {r['step_s']:>8.2f} {r['clips_per_s']:>8.2f} {r['peak_mem_mb']:>9.0f} "
                f"{gflop:>10.1f} {mfu:>7.1%}" + loop
            )
        print(f"#   {precision}: MFU against {peak / 1e12:.2f} TFLOP/s ({peak_source})")
    print("# published implementation: 0.60 clips/s fp32 train step on CPU")
    if args.data:
        print(
            f"# data loader: {loader_throughput(args):.1f} clips/s with {args.workers} workers "
            f"(needs >= the training clips/s to keep up)"
        )


if __name__ == "__main__":
    main()
