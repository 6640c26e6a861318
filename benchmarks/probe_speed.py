"""Probe solver speed: scikit-learn (the release's reference) vs the torch L-BFGS solver.

BoLD-sized random features (7,000 train x 512, 26 labels, a planted linear structure so the probe
has something to find), one-vs-rest logistic regression with C = 3.16; metrics on 2,000 held-out
samples. Both solvers are timed in the same run; on the shared CPU the speed-up is the result, the
seconds are noisy. Usage: ``python benchmarks/probe_speed.py [--n 7000] [--dim 512] [--labels 26]
[--device cuda]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from _cpu import describe  # benchmarks/ is the script's folder

from emotionclip.evaluate import metrics as M
from emotionclip.evaluate.probe import fit_sklearn, fit_torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=7000)
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--labels", type=int, default=26)
    ap.add_argument("--c", type=float, default=3.16)
    ap.add_argument("--device", default=None, help="torch solver device (default: cuda when available)")
    ap.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's; 1 is best on a shared CPU)"
    )
    ap.add_argument("--skip-sklearn", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rng = np.random.default_rng(0)
    n = args.n + args.test
    x = rng.normal(size=(n, args.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    w = rng.normal(size=(args.dim, args.labels)).astype(np.float32)
    z = 6 * x @ w + rng.normal(size=(n, args.labels))
    y = (z > np.quantile(z, 0.85, axis=0)).astype(np.float32)  # ~15 % positives per label, like BoLD
    names = [f"c{i}" for i in range(args.labels)]
    xtr, ytr, xte, yte = x[: args.n], y[: args.n], x[args.n :], y[args.n :]
    print(describe())
    print(f"features {args.n} x {args.dim}, {args.labels} labels, C={args.c}")

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    fit_torch("ovr", xtr[:200], ytr[:200], names, c=args.c, device=device)  # warm-up (CUDA context, kernels)
    t = time.perf_counter()
    fast = fit_torch("ovr", xtr, ytr, names, c=args.c, device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t_fast = time.perf_counter() - t
    pf = fast.predict(xte)
    print(
        f"torch L-BFGS ({device}): {t_fast:.2f} s  mAP {100 * M.macro_map(yte, pf):.2f}  AUC {100 * M.macro_roc_auc(yte, pf):.2f}"
    )
    if args.skip_sklearn:
        return
    t = time.perf_counter()
    ref = fit_sklearn("ovr", xtr, ytr, names, c=args.c)
    t_ref = time.perf_counter() - t
    ps = ref.predict(xte)
    print(
        f"sklearn sag (cpu):   {t_ref:.2f} s  mAP {100 * M.macro_map(yte, ps):.2f}  AUC {100 * M.macro_roc_auc(yte, ps):.2f}"
    )
    d_map = abs(100 * (M.macro_map(yte, pf) - M.macro_map(yte, ps)))
    d_auc = abs(100 * (M.macro_roc_auc(yte, pf) - M.macro_roc_auc(yte, ps)))
    print(
        f"speed-up {t_ref / t_fast:.1f}x; |mAP diff| {d_map:.3f}, |AUC diff| {d_auc:.3f} (points); "
        f"max |prob diff| {np.abs(pf - ps).max():.4f}"
    )


if __name__ == "__main__":
    main()
