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


def test_resolve_detector_puts_named_detectors_on_the_stage_device(caplog):
    from emotionclip.detect import resolve_detector

    on_gpu = resolve_detector("nanodet", device="cuda:1")
    assert on_gpu.device == "cuda:1" and resolve_detector("nanodet", device="cuda:1") is on_gpu  # cached
    assert (
        resolve_detector("nanodet").device is None
        and resolve_detector("nanodet", device="cpu").device is None
    )
    with caplog.at_level(logging.INFO, logger="emotionclip.detect"):
        faces = resolve_detector("faces", device="cuda")  # TFLite: no GPU path
    assert faces is resolve_detector("faces") and "has no GPU path" in caplog.text
    mine = get_detector("default")
    assert resolve_detector(mine, device="cuda") is mine  # a built detector is used as it is


def test_stages_pass_their_device_to_the_detector(monkeypatch):
    import torch

    import emotionclip.detect as detect
    from emotionclip.analyze.embed import embed_image
    from emotionclip.cli import main
    from emotionclip.prepare import pipeline
    from emotionclip.prepare.pipeline import PrepareConfig, _build_components

    seen = []
    real = detect.resolve_detector

    def spy(spec, device=None):
        seen.append((spec, None if device is None else str(device)))
        return real(spec, device=device)

    monkeypatch.setattr(detect, "resolve_detector", spy)
    _build_components(PrepareConfig(detector="nanodet", device="cuda:1"))
    assert seen[-1] == ("nanodet", "cuda:1")
    configs = []
    monkeypatch.setattr(pipeline, "prepare", lambda src, out, config: configs.append(config) or {"inputs": 0})
    main(["prepare", "in", "out", "--device", "cuda:1"])
    assert configs[0].device == "cuda:1"

    import emotionclip.analyze.embed as embed

    monkeypatch.setattr(embed, "resolve_detector", spy)
    model = __import__("emotionclip").create_model("tiny", pretrained=None, video_len=2).eval()
    with torch.no_grad():
        embed_image(model, np.zeros((48, 64, 3), np.uint8), detector="nanodet")
    assert seen[-1] == ("nanodet", "cpu")  # the model's device
