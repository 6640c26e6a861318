"""The one way stages run a model: a :class:`Runner`, built once at the entry point.

A runner holds the weights, the device and the precision, and encodes (``encode_video``,
``encode_image``, ``encode_text``, ``visual_head``) in eval mode without gradients, returning float32
on its device. :func:`load_runner` builds one from (checkpoint, device, precision, backend);
:func:`as_runner` wraps a model in hand (a training loop's, a notebook's) without moving or
switching it. The implementations are :class:`emotionclip.backends.TorchModel` (an EmotionCLIP under
autocast) and :class:`emotionclip.backends.InferenceModel` (ONNX Runtime / OpenVINO graphs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import torch


class Runner(Protocol):
    device: torch.device
    precision: str  # emotionclip.precision name (int8 for a quantised export)
    backend: str  # what runs, with its precision: "torch-bf16", "onnxruntime-int8", ...
    video_len: int
    image_size: int
    embed_dim: int
    logit_scale: torch.Tensor

    def encode_video(self, video, video_mask=None) -> torch.Tensor: ...

    def encode_image(self, image, image_mask=None) -> torch.Tensor: ...

    def encode_text(self, tokens) -> torch.Tensor: ...

    def visual_head(self, frames) -> torch.Tensor: ...


def load_runner(
    checkpoint: str | os.PathLike,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    backend: str = "torch",
) -> Runner:
    """A runner for ``checkpoint`` (anything :func:`emotionclip.load_model` reads, or an export folder
    of ``emotionclip export``) on ``device`` at ``precision``, run by ``backend``: ``torch``,
    ``onnxruntime``, ``openvino`` or ``auto`` (the fastest here, measured once: :mod:`emotionclip.backends`).
    ``precision`` defaults to fp32 (torch on CUDA: the device's default precision)."""
    from .backends import load_backend
    from .export import EXPORT_CONFIG
    from .factory import load_model

    if not (Path(checkpoint).expanduser() / EXPORT_CONFIG).is_file():
        on_device = backend in ("auto", "torch") and torch.device(device).type != "cpu"
        checkpoint = load_model(checkpoint, device if on_device else "cpu")
    return load_backend(checkpoint, backend, precision, device)


def as_runner(model, device=None, precision: str | None = None) -> Runner:
    """``model`` as a runner: a runner as it is (``device`` / ``precision``, if given, must be its
    own), an EmotionCLIP as a :class:`~emotionclip.backends.TorchModel` on ``device`` (default: where
    it is; elsewhere a copy) at ``precision`` (default fp32); the caller's model is never changed."""
    from .backends.runtimes import InferenceModel, TorchModel, resolve_device

    if isinstance(model, (TorchModel, InferenceModel)):
        wanted = precision is not None and precision != model.precision
        if wanted or (device is not None and resolve_device(device) != model.device):
            raise ValueError(
                f"the model runs as {model.backend} on {model.device}; load it with the precision "
                f"and device you want instead of passing device={device}, precision={precision}"
            )
        return model
    return TorchModel(model, device, precision or "fp32")
