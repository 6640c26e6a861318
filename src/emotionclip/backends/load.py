"""``load_backend``: a checkpoint or an export folder, run by the backend asked for (or the fastest)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .cache import cached_export
from .runtimes import InferenceModel, TorchModel, check_backend

logger = logging.getLogger(__name__)


def _is_export(path: Path) -> bool:
    from ..export import EXPORT_CONFIG

    return path.is_dir() and (path / EXPORT_CONFIG).is_file()


def load_backend(
    model_or_export,
    backend: str = "auto",
    precision: str | None = None,
    device="cpu",
    threads: int | None = None,
):
    """An EmotionCLIP (or an export folder) run by ``backend``: ``auto`` (see
    :func:`~emotionclip.backends.choose_backend`), ``torch``, ``onnxruntime`` or ``openvino``. ``precision`` defaults to fp32 (torch on CUDA: the device's
    :func:`~emotionclip.precision.default_precision`); a model is exported on first use into
    :func:`~emotionclip.backends.cache_dir`. Checkpoints: :func:`emotionclip.load_runner`.
    """
    import torch

    from ..precision import default_precision

    device = torch.device(device)
    if backend != "auto":
        check_backend(backend, precision or "fp32")
    model = None
    if isinstance(model_or_export, (str, os.PathLike)):
        if not _is_export(Path(model_or_export)):
            raise ValueError(
                f"{model_or_export}: not an export folder; load checkpoints with "
                "emotionclip.load_runner(path, backend=...)"
            )
        if backend in ("auto", "torch"):
            raise ValueError(
                f"{model_or_export}: an export folder runs with backend onnxruntime or openvino, not {backend}"
            )
    else:
        model = model_or_export
    if backend == "auto":
        from .auto import choose_backend

        backend, precision = choose_backend(model, device, precision)
    if backend == "torch":
        precision = precision or default_precision(device)
        check_backend(backend, precision)
        return TorchModel(model, device, precision)
    if device.type != "cpu":
        raise ValueError(f"backend {backend} runs on the CPU here; use backend torch for {device}")
    if model is None:
        return InferenceModel(model_or_export, backend, precision, threads)
    precision = precision or "fp32"
    from ..export import ExportError

    try:
        return InferenceModel(cached_export(model, backend, precision), backend, precision, threads)
    except ExportError as e:  # our own cache, damaged (a full disk, a crash): made again, not fatal forever
        logger.warning("%s; exporting the model again", e)
        return InferenceModel(
            cached_export(model, backend, precision, rebuild=True), backend, precision, threads
        )
