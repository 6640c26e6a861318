"""The machine line every benchmark prints: CPU model, the flags that decide reduced-precision speed,
cores and torch threads. The CPU is shared while benchmarks run here, so compare ratios measured in
one run, not absolute numbers across runs."""

from __future__ import annotations

import os

import torch

from emotionclip.backends.auto import cpu_description


def describe() -> str:
    cpu = cpu_description()  # the parser backend="auto" keys its per-machine choice on
    flags = " ".join(cpu["flags"]) or "none of AMX / AVX-512 bf16 / VNNI / AVX2"
    return (
        f"CPU {cpu['model']}; flags {flags}; {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
        "shared machine: compare the ratios of one run"
    )
