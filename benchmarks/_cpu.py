"""The machine line every benchmark prints: CPU model, the flags that decide reduced-precision speed,
cores and torch threads. The CPU is shared while benchmarks run here, so compare ratios measured in
one run, not absolute numbers across runs."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


def describe() -> str:
    model, flags = None, set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []:
        if line.startswith("model name") and model is None:
            model = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    present = [f for f in FLAGS if f in flags] or ["none of " + ", ".join(FLAGS)]
    return (
        f"CPU {model or platform.processor() or platform.machine()}; flags {' '.join(present)}; "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__} "
        f"({torch.backends.cpu.get_cpu_capability()}); shared machine: compare the ratios of one run"
    )
