#!/usr/bin/env bash
# GPU checks for one lent H100/H200 (never part of CI): about 8 minutes. Run from the repository root:
#     bash benchmarks/gpu_check.sh [OUT_DIR]
# Each check has its own time limit and prints PASS/FAIL/INFO lines; one failure does not stop the rest.
#  1. training step, bf16 + SDPA + fused AdamW, eager and --compile: clips/s and MFU (train_throughput.py),
#     FLOP counted with --count-flops, peak read for the --device in use (cluster items 11, 14)
#  2. the real loop: `emotionclip train` on a corpus prepared from the sample media, with uint8 frames
#     normalised on the device (item 1), deterministic resampled shards twice (item 9), a resume late
#     in the run (item 12), eager and --compile (items 11, 13)
#  3. encode_video clips/s per backend on the GPU (torch fp32 / bf16 / fp16, auto) vs the published fp32 path
#  4. a two-step torchrun run (NCCL, one rank: a second rank cannot share one GPU under NCCL), rank -> device
#     mapping with LOCAL_RANK beyond the visible devices (item 4), NaN agreement is covered by the CPU tests (item 2)
#  5. evaluation's feature extraction on CUDA: the native precision, fp16 below compute capability 8 (item 10)
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT="${1:-${OUT:-/tmp/emotionclip-gpu-check}}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }
run() { # run NAME SECONDS CMD...: time-boxed, output kept in OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        say "PASS $name ($((SECONDS - t0)) s)"
    else
        say "FAIL $name (rc $?, $((SECONDS - t0)) s; see $OUT/$name.log)"
        tail -5 "$OUT/$name.log" | sed 's/^/    /' | tee -a "$LOG"
    fi
}

say "# $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
say "# torch $(python -c 'import torch; print(torch.__version__, "cuda", torch.version.cuda, "cc", torch.cuda.get_device_capability())')"

# 1. training step: eager vs compile, bf16, SDPA, fused AdamW
run train_step_eager 150 python benchmarks/train_throughput.py --device cuda --batch-sizes 64,128 \
    --precisions bf16 --steps 10 --warmup 3 --count-flops
run train_step_compile 240 python benchmarks/train_throughput.py --device cuda --batch-sizes 128 \
    --precisions bf16 --steps 10 --warmup 5 --compile
grep -hE "clips/s|MFU" "$OUT"/train_step_*.log | sed 's/^/    /' | tee -a "$LOG"

# 2. the real loop on a small corpus from the shipped sample media
CORPUS="$OUT/corpus"
run prepare 120 python -m emotionclip prepare src/emotionclip/sample_media "$CORPUS" --detector none
for mode in eager compile; do
    extra=()
    [ "$mode" = compile ] && extra=(--compile)
    run "loop_$mode" 150 python -m emotionclip train --data "$CORPUS" --output "$OUT/run_$mode" \
        --backbone ViT-B-32 --batch-size 16 --workers 4 --steps-per-epoch 20 --max-steps 20 \
        --precision bf16 --device cuda --save-every 10 "${extra[@]}"
done
# same seed, resampled shards: the per-step losses of two runs (GPU backward is not bitwise deterministic)
run loop_again 120 python -m emotionclip train --data "$CORPUS" --output "$OUT/run_again" \
    --backbone ViT-B-32 --batch-size 16 --workers 4 --steps-per-epoch 20 --max-steps 20 \
    --precision bf16 --device cuda --save-every 10
python - "$OUT" <<'EOF' | tee -a "$LOG"
import csv, sys
from pathlib import Path
out = Path(sys.argv[1])
def losses(run):
    for f in sorted((out / run).rglob("*.csv")):
        rows = list(csv.DictReader(f.open()))
        if rows and "loss" in rows[0]:
            return [float(r["loss"]) for r in rows]
    return None
a, b = losses("run_eager"), losses("run_again")
if a and b:
    gap = max(abs(x - y) for x, y in zip(a, b))
    print(f"INFO same-seed loss curves: {len(a)} vs {len(b)} points, max |difference| {gap:.2e}")
else:
    print("INFO no loss CSV found to compare (see loop_*.log)")
EOF
# resume late in the run: time to the first new step shows whether skipped batches are decoded
run loop_resume 150 python -m emotionclip train --data "$CORPUS" --output "$OUT/run_eager" \
    --backbone ViT-B-32 --batch-size 16 --workers 4 --steps-per-epoch 20 --max-steps 30 \
    --precision bf16 --device cuda --resume latest
grep -hiE "clips/s|step.*/s|resum" "$OUT"/loop_*.log | tail -8 | sed 's/^/    /' | tee -a "$LOG"

# 3. encode_video per backend on the GPU
run encode_video 150 python benchmarks/core_throughput.py --device cuda --batch 32 --repeats 5
sed 's/^/    /' "$OUT/encode_video.log" | grep -vE "^\s*$" | tail -8 | tee -a "$LOG"

# 4. torchrun, two steps, and the rank -> device mapping of SLURM tasks bound to one GPU each
run torchrun_two_steps 150 torchrun --standalone --nproc_per_node 1 -m emotionclip train --data "$CORPUS" \
    --output "$OUT/run_torchrun" --backbone ViT-B-32 --batch-size 16 --workers 2 --steps-per-epoch 2 \
    --max-steps 2 --precision bf16 --device cuda
run device_mapping 60 python -c "
import torch
from emotionclip.train.distributed import cuda_index
n = torch.cuda.device_count()
for local_rank in range(4):
    i = cuda_index(local_rank, n)
    torch.zeros(1, device=f'cuda:{i}')
    print(f'LOCAL_RANK {local_rank} -> cuda:{i} of {n} visible')
"

# 5. evaluation features on CUDA at the native precision; a device other than the model's
run evaluate_precision 60 python -c "
import torch, emotionclip
from emotionclip.backends import load_backend
from emotionclip.precision import default_precision
dev = torch.device('cuda')
print('default precision', default_precision(dev), 'cc', torch.cuda.get_device_capability(dev))
m = emotionclip.create_model('ViT-B-32').eval()  # lives on the CPU
r = load_backend(m, 'auto', device=dev)
v = torch.randn(4, 8, 3, 224, 224)
f = r.encode_video(v, None)
ref = m.encode_video(v, None).detach()
cos = torch.nn.functional.cosine_similarity(f.cpu(), ref, dim=-1).min()
print(r.backend, 'on', f.device, 'cosine to CPU fp32', float(cos))
assert next(m.parameters()).device.type == 'cpu', 'the caller model moved'
"
# 6. the ONNX detectors on the GPU (ONNX Runtime's CUDA provider; needs onnxruntime-gpu): the provider
# in use, the boxes against the CPU session's on friday, and frames per second on each
run detector_cuda 120 python -c "
import time, numpy as np, onnxruntime as ort
from emotionclip.detect import get_detector, resolve_detector
from emotionclip.video_io import read_frames_at
print('onnxruntime', ort.__version__, 'providers', ort.get_available_providers())
frames = read_frames_at('src/emotionclip/sample_media/friday.mp4', [0.2 * k for k in range(30)], short_side=256)
for name in ('default', 'nanodet'):
    gpu, cpu = resolve_detector(name, device='cuda'), get_detector(name)  # resolve_detector: what the stages' --device cuda builds
    a, b = gpu.detect(frames), cpu.detect(frames)
    used = gpu._session.get_providers()
    print(name, 'session providers', used)
    assert used[0] == 'CUDAExecutionProvider', 'the detector did not get the GPU'
    assert all(len(x) == len(y) and np.allclose(x, y, atol=1.0) for x, y in zip(a, b)), 'GPU boxes differ'
    for det, where in ((gpu, 'cuda'), (cpu, 'cpu')):
        t = time.perf_counter(); det.detect(frames); dt = time.perf_counter() - t
        print(f'{name} on {where}: {len(frames) / dt:.1f} frames/s')
"
say "# done: $LOG"
