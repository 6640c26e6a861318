"""The ONNX detectors' execution providers: the GPU with device="cuda" when onnxruntime has it, else
the CPU with a log line (checked with a fake provider list, no GPU needed)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from emotionclip.detect import get_detector
from emotionclip.detect.base import onnx_providers

ort = pytest.importorskip("onnxruntime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def test_providers_for_each_device(caplog):
    assert onnx_providers(None, [CUDA, CPU]) == [CPU]
    assert onnx_providers("cpu", [CUDA, CPU]) == [CPU]
    assert onnx_providers("cuda", [CUDA, CPU]) == [(CUDA, {"device_id": 0}), CPU]
    assert onnx_providers("cuda:2", [CUDA, CPU]) == [(CUDA, {"device_id": 2}), CPU]
    with caplog.at_level(logging.WARNING, logger="emotionclip.detect.base"):
        assert onnx_providers("cuda", [CPU]) == [CPU]
    assert "no CUDAExecutionProvider" in caplog.text and "runs on the CPU" in caplog.text


@pytest.mark.parametrize("name", ["default", "nanodet"])
def test_detector_sessions_ask_for_cuda_when_available(monkeypatch, name):
    asked = []
    real = ort.InferenceSession

    def session(path, opts, providers):
        asked.append(providers)
        return real(path, opts, providers=[CPU])  # the machine running the tests has no GPU

    monkeypatch.setattr(ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(ort, "InferenceSession", session)

    frames = np.zeros((2, 64, 96, 3), np.uint8)
    assert len(get_detector(name, device="cuda").detect(frames)) == 2
    assert asked and asked[0][0] == (CUDA, {"device_id": 0})
    asked.clear()
    get_detector(name).detect(frames)  # no device: the CPU, as before
    assert asked == [[CPU]]


def test_detector_falls_back_to_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])

    with caplog.at_level(logging.WARNING, logger="emotionclip.detect.base"):
        boxes = get_detector("default", device="cuda").detect(np.zeros((1, 64, 96, 3), np.uint8))
    assert len(boxes) == 1 and "runs on the CPU" in caplog.text
