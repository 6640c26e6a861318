"""Running a caller's model without changing it: eval mode for the run, and another device by copy."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def _resolve(device) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


@contextmanager
def inference_model(model: torch.nn.Module, device=None) -> Iterator[tuple[torch.nn.Module, torch.device]]:
    """``(model, device)`` to run inference with: the caller's model in eval mode when it already sits
    on ``device`` (its train/eval mode restored afterwards), else an eval copy on ``device``, so the
    caller's model never moves (a training loop's model stays where its optimiser expects it).
    An :mod:`emotionclip.backends` object runs where it was loaded, as it is."""
    if hasattr(model, "backend"):
        yield model, model.device
        return
    current = next(model.parameters()).device
    device = _resolve(device) if device is not None else current
    if device != current:
        yield copy.deepcopy(model).to(device).eval(), device
        return
    was_training = model.training
    try:
        yield model.eval(), device
    finally:
        model.train(was_training)
