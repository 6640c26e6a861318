"""Running a caller's model without changing it (its train/eval flags are put back afterwards), and the
process's one OpenVINO ``Core`` (export's int8 check and the OpenVINO backend share it)."""

from __future__ import annotations

import contextlib
import threading


@contextlib.contextmanager
def eval_mode(model):
    """The model in eval mode for the body, every module's own train/eval flag restored after."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


_OV_CORE = None
_OV_CORE_LOCK = threading.Lock()


def openvino_core():
    """The process's one ``openvino.Core``, kept until exit.

    Each Core's CPU plugin puts its own signal stack (sigaltstack) on the calling thread and unmaps
    it when released: Cores released out of creation order leave the thread on an unmapped stack,
    and the next signal handled there (SIGCHLD, SIGTERM) kills the process with SIGSEGV.
    """
    global _OV_CORE
    with _OV_CORE_LOCK:
        if _OV_CORE is None:
            import openvino as ov

            _OV_CORE = ov.Core()
        return _OV_CORE


def int8_float_precision() -> str:
    """OpenVINO's inference precision for the ops an int8 graph keeps in floating point: ``bf16``
    where the CPU has bf16 instructions (AMX, AVX-512 bf16; OpenVINO's own default there), else
    ``f32``. The held-out check of an int8 export runs at it too and records it."""
    caps = openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in caps else "f32"
