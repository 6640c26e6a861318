"""One precision policy for every stage: ``fp32 | bf16 | fp16``, as autocast on CPU and CUDA.

Weights stay fp32; ``bf16``/``fp16`` run matmuls in reduced precision under autocast. fp16 needs a
GPU; on CUDA devices older than compute capability 8 bf16 is emulated, so :func:`default_precision`
picks fp16 there.
"""

from __future__ import annotations

import contextlib

PRECISIONS = ("fp32", "bf16", "fp16")  # torch is imported on use: the CLI reads these names


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(device, precision: str):
    """The context for running a model at ``precision`` on ``device`` (nothing for fp32)."""
    import torch

    check_precision(precision)
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ValueError("fp16 needs a CUDA device; use bf16 on the CPU")
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def default_precision(device) -> str:
    """Reduced precision where it is native (bf16 on Ampere+, fp16 on older GPUs), fp32 on the CPU."""
    import torch

    device = torch.device(device)
    if device.type != "cuda":
        return "fp32"
    major, _ = torch.cuda.get_device_capability(device)
    return "bf16" if major >= 8 else "fp16"
