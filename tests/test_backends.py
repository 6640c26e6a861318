"""Inference backends: one interface, torch never mutated, `auto` measured once and cached."""

import json
import subprocess
import sys

import pytest
import torch

import emotionclip
from emotionclip.backends import auto as auto_mod
from emotionclip.backends import choose_backend, load_backend
from emotionclip.backends.runtimes import InferenceModel, TorchModel
from emotionclip.runner import as_runner


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return emotionclip.create_model("tiny").eval()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EMOTIONCLIP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _clip(model, batch=2):
    g = torch.Generator().manual_seed(3)
    s = model.image_size
    video = torch.randn(batch, model.video_len, 3, s, s, generator=g)
    mask = torch.zeros(batch, model.video_len, s, s)
    mask[:, :, 50:150, 70:170] = 1
    return video, mask


def test_torch_backend_from_a_checkpoint(tiny, tmp_path):
    path = emotionclip.save_model(tiny, tmp_path / "m")
    model = emotionclip.load_runner(path, backend="torch", precision="bf16")
    assert isinstance(model, TorchModel) and model.backend == "torch-bf16"
    assert (model.video_len, model.embed_dim, model.image_size) == (tiny.video_len, tiny.embed_dim, 224)
    video, mask = _clip(tiny)
    got = model.encode_video(video, mask)
    assert got.dtype == torch.float32 and _cos(got, tiny.encode_video(video, mask).detach()) > 0.99
    with pytest.raises(ValueError, match="runs fp32, bf16, fp16, not 'int8'"):
        emotionclip.load_runner(path, backend="torch", precision="int8")
    with pytest.raises(ValueError, match="backend must be auto or one of"):
        emotionclip.load_runner(path, backend="tensorrt")


def test_the_callers_model_is_never_moved_or_switched(tiny):
    model = emotionclip.create_model("tiny").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    runner = as_runner(model, "cpu", "fp32")
    video, mask = _clip(model, 1)
    runner.encode_video(video, mask)
    runner.encode_text(emotionclip.tokenize(["hi"]))
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # eval mode inside: dropout off, so two calls agree although the model trains
    assert torch.equal(runner.encode_video(video, mask), runner.encode_video(video, mask))


def test_runtimes_from_a_model_export_once_into_the_cache(tiny, cache):
    pytest.importorskip("onnxruntime")
    video, mask = _clip(tiny)
    model = load_backend(tiny, "onnxruntime")
    assert isinstance(model, InferenceModel) and model.backend == "onnxruntime-fp32"
    assert _cos(model.encode_video(video, mask), tiny.encode_video(video, mask).detach()) > 0.99999
    (folder,) = (cache / "exports").glob("*/onnx-fp32")
    stamp = (folder / "frame_encoder.onnx").stat().st_mtime_ns
    again = load_backend(tiny, "onnxruntime")  # reuses the export
    assert (folder / "frame_encoder.onnx").stat().st_mtime_ns == stamp
    assert torch.equal(again.encode_video(video, mask), model.encode_video(video, mask))
    with pytest.raises(ValueError, match="runs on the CPU"):
        load_backend(tiny, "onnxruntime", device="cuda")


def test_auto_picks_the_fastest_within_the_cosine_bound():
    results = [
        {"backend": "torch", "precision": "fp32", "seconds_per_clip": 1.0, "cosine": 1.0},
        {"backend": "onnxruntime", "precision": "int8", "seconds_per_clip": 0.2, "cosine": 0.99},
        {"backend": "openvino", "precision": "fp32", "seconds_per_clip": 0.5, "cosine": 0.99995},
        {"backend": "openvino", "precision": "bf16", "error": "RuntimeError: no"},
    ]
    assert auto_mod._pick(results)["backend"] == "openvino"
    assert auto_mod._pick(results[:2])["backend"] == "torch"  # int8 too far from fp32
    assert auto_mod._pick(results[1:2]) == {"backend": "torch", "precision": "fp32"}  # only int8 asked


def test_auto_may_measure_openvino_int8_behind_its_held_out_check():
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    assert ("openvino", "int8") in auto_mod.candidates()
    # a candidate now: whether auto measures it depends on its export's own check (test_int8_check.py)
    assert ("openvino", "int8") in auto_mod.candidates(for_auto=True)
    assert ("openvino", "int8") in auto_mod.CHECKED_INT8


def _no_runtimes(monkeypatch):
    for name in ("onnxruntime", "openvino", "nncf"):
        monkeypatch.setitem(sys.modules, name, None)  # `import onnxruntime` now raises ImportError


def test_auto_falls_back_to_torch_without_runtimes_and_caches_its_choice(tiny, cache, monkeypatch):
    _no_runtimes(monkeypatch)
    assert auto_mod.candidates() == [("torch", "fp32"), ("torch", "bf16")]
    backend, precision = choose_backend(tiny, "cpu")
    assert backend == "torch"
    record = next(iter(json.loads((cache / auto_mod.CHOICES_FILE).read_text()).values()))
    assert record["choice"] == [backend, precision] and record["machine"]["model"]
    assert {tuple(p) for p in record["candidates"]} == {("torch", "fp32"), ("torch", "bf16")}

    def measure_again(*a, **k):
        raise AssertionError("measured twice")

    monkeypatch.setattr(auto_mod, "measure", measure_again)
    assert choose_backend(tiny, "cpu") == (backend, precision)
    model = load_backend(tiny, "auto")
    assert model.backend == f"torch-{precision}"


def test_auto_with_runtimes_measures_each_and_logs_the_choice(tiny, cache, monkeypatch, caplog):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    pairs = [("torch", "fp32"), ("onnxruntime", "fp32"), ("openvino", "fp32")]
    monkeypatch.setattr(auto_mod, "candidates", lambda for_auto=False: pairs)
    with caplog.at_level("INFO", logger="emotionclip.backends.auto"):
        chosen = choose_backend(tiny, "cpu")
    assert chosen in pairs
    record = next(iter(json.loads((cache / auto_mod.CHOICES_FILE).read_text()).values()))
    assert all(r["cosine"] > 0.99999 and r["seconds_per_clip"] > 0 for r in record["results"])
    assert f"backend auto: {chosen[0]} {chosen[1]}" in caplog.text


# In a fresh interpreter: OpenVINO models released in creation order, then a signal handled on the
# main thread. Each ov.Core's CPU plugin swaps that thread's signal stack and unmaps its own on release;
# with a Core per graph this left the stack unmapped and the signal killed the process (SIGSEGV).
_SIGNAL_STACK_PROBE = r"""
import ctypes, faulthandler, gc, signal, sys, threading
from emotionclip.backends.runtimes import InferenceModel

faulthandler.enable()  # Python's own signal stack on the main thread, as under pytest
first = InferenceModel(sys.argv[1], "openvino")
second = InferenceModel(sys.argv[1], "openvino")
del first, second
gc.collect()

class Stack(ctypes.Structure):
    _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

st = Stack()
ctypes.CDLL(None).sigaltstack(None, ctypes.byref(st))
maps = [[int(x, 16) for x in line.split()[0].split("-")] for line in open("/proc/self/maps")]
if st.sp and not st.flags & 2 and not any(lo <= st.sp < hi for lo, hi in maps):  # 2: SS_DISABLE
    sys.exit(f"the main thread's signal stack {st.sp:#x} is unmapped")
signal.signal(signal.SIGUSR1, lambda *_: None)
signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
print("signal handled")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack and /proc/self/maps: Linux")
def test_released_openvino_models_leave_the_signal_stack_mapped(tiny, tmp_path):
    pytest.importorskip("openvino")
    from emotionclip.export import export_model

    folder = export_model(tiny, tmp_path / "ov", "openvino", "fp32")
    res = subprocess.run(
        [sys.executable, "-c", _SIGNAL_STACK_PROBE, str(folder)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0 and "signal handled" in res.stdout, (
        f"exit {res.returncode} (-11: SIGSEGV): {res.stderr[-3000:]}"
    )


def test_cuda_takes_torch_at_the_native_precision(tiny, monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    assert choose_backend(tiny, "cuda:0") == ("torch", "fp16")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert choose_backend(tiny, "cuda") == ("torch", "bf16")


def test_an_export_folder_needs_a_runtime(tiny, tmp_path):
    pytest.importorskip("onnxruntime")
    from emotionclip.export import export_model

    out = export_model(tiny, tmp_path / "e", "onnx")
    with pytest.raises(ValueError, match="runs with backend onnxruntime or openvino, not torch"):
        emotionclip.load_runner(out, backend="torch")
    with pytest.raises(ValueError, match="not an export folder"):
        load_backend(tmp_path, "onnxruntime")


def test_cli_backends_give_the_torch_results(tiny, cache, tmp_path):
    pytest.importorskip("onnxruntime")
    import numpy as np
    from PIL import Image

    from emotionclip.cli import main
    from emotionclip.evaluate.zeroshot import zero_shot

    ckpt = emotionclip.save_model(tiny, tmp_path / "model")
    image = tmp_path / "in" / "face.png"
    image.parent.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(image)
    common = [str(image.parent), "--checkpoint", str(ckpt), "--detector", "none"]
    assert main(["embed", *common, "--out", str(tmp_path / "torch")]) == 0
    assert main(["embed", *common, "--out", str(tmp_path / "ort"), "--backend", "onnxruntime"]) == 0
    a = np.load(tmp_path / "torch" / "face.npz")["features"]
    b = np.load(tmp_path / "ort" / "face.npz")["features"]
    assert _cos(torch.from_numpy(a), torch.from_numpy(b)) > 0.99999
    ref = zero_shot(ckpt, [image], device="cpu")
    got = zero_shot(ckpt, [image], device="cpu", backend="onnxruntime")
    for r, g in zip(ref["results"], got["results"], strict=True):
        assert r["scores"] == pytest.approx(g["scores"], abs=1e-4)
