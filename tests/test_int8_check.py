"""OpenVINO int8 that holds: the float scope, the held-out check each export records, and ``auto``
considering int8 only when that check passed (real NNCF quantisation of the tiny model, no mocks)."""

import json

import pytest
import torch

import emotionclip
from emotionclip.backends import auto as auto_mod
from emotionclip.backends import choose_backend, load_backend
from emotionclip.backends.cache import cached_export
from emotionclip.export import (
    CHECK_VIDEOS,
    INT8_CHECK_BUDGET,
    float_scope,
    int8_check,
    read_export_config,
    sample_videos,
)

pytest.importorskip("nncf")
ov = pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return emotionclip.create_model("tiny").eval()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("cache")
        mp.setenv("EMOTIONCLIP_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def int8_folder(tiny, cache):
    return cached_export(tiny, "openvino", "int8")  # real NNCF quantisation, once for the module


def test_check_videos_are_whole_sample_videos_calibration_never_sees():
    check = {v.name for v in sample_videos("check")}
    calibration = {v.name for v in sample_videos("calibration")}
    assert check == set(CHECK_VIDEOS) and not check & calibration
    assert check | calibration == {v.name for v in sample_videos("all")}


def test_float_scope_finds_the_sensitive_ops(tiny, int8_folder, cache):
    (fp32,) = (cache / "exports").glob("*/onnx-fp32")
    graph = ov.convert_model(str(fp32 / "frame_encoder.onnx"))
    kept = float_scope(graph)
    types = {op.get_friendly_name(): op.get_type_name() for op in graph.get_ordered_ops()}
    assert [types[k] for k in kept].count("Convolution") == 1  # the patch embedding
    layers = len(tiny.backbone.visual.transformer.resblocks)
    # subject token, each block's attention input and output projections, the last block's MLP
    # (two MatMuls), the final projection
    assert [types[k] for k in kept].count("MatMul") == 2 + 2 * layers + 2
    last = f"resblocks.{layers - 1}/"
    assert not [k for k in kept if "mlp" in k and last not in k]  # the other MLPs stay int8
    assert "features" in kept  # the MatMul that makes the output
    assert read_export_config(int8_folder)["float_ops"] == kept


def test_int8_export_records_its_held_out_check_and_round_trips(tiny, int8_folder):
    cfg = read_export_config(int8_folder)
    check = cfg["int8_check"]
    assert cfg["precision"] == "int8" and cfg["format"] == "openvino"
    assert check["videos"] == sorted(CHECK_VIDEOS) and check["frames"] == 96
    assert 0.9 < check["min_cosine"] <= check["mean_cosine"] <= 1.0
    assert check["budget"] == INT8_CHECK_BUDGET and check["float_ops_precision"] in ("f32", "bf16")
    assert check["passed"] == (check["min_cosine"] >= INT8_CHECK_BUDGET)
    # the recorded numbers are what the check computes from the saved graph
    again = int8_check(tiny, int8_folder / cfg["graphs"]["frame_encoder"])
    assert again["min_cosine"] == pytest.approx(check["min_cosine"], abs=1e-5)
    # the folder is an ordinary export: an explicit int8 runner loads it whatever the check said
    runner = emotionclip.load_runner(int8_folder, backend="openvino", precision="int8")
    assert runner.backend == "openvino-int8"
    assert json.loads((int8_folder / "emotionclip_export.json").read_text()) == cfg


def _auto_with_int8(tiny, monkeypatch):
    pairs = [("torch", "fp32"), ("openvino", "int8")]
    monkeypatch.setattr(auto_mod, "candidates", lambda for_auto=False: pairs)
    return choose_backend(tiny, "cpu")


def _record(cache):
    return next(iter(json.loads((cache / auto_mod.CHOICES_FILE).read_text()).values()))


def test_auto_excludes_int8_whose_check_fails_and_says_why(tiny, cache, int8_folder, monkeypatch, caplog):
    (cache / auto_mod.CHOICES_FILE).unlink(missing_ok=True)
    monkeypatch.setattr(auto_mod, "INT8_MIN_COSINE", 1.01)  # a budget no check can meet
    with caplog.at_level("INFO", logger="emotionclip.backends.auto"):
        chosen = _auto_with_int8(tiny, monkeypatch)
    assert chosen == ("torch", "fp32")
    int8 = next(r for r in _record(cache)["results"] if r["backend"] == "openvino")
    assert int8["error"].startswith("excluded: its held-out check gave min cosine")
    assert "cosine" not in int8 and "seconds_per_clip" not in int8
    assert "not considering openvino int8" in caplog.text


def test_auto_considers_int8_whose_check_passes(tiny, cache, int8_folder, monkeypatch):
    (cache / auto_mod.CHOICES_FILE).unlink(missing_ok=True)
    monkeypatch.setattr(auto_mod, "INT8_MIN_COSINE", 0.5)  # the tiny model's check passes this
    _auto_with_int8(tiny, monkeypatch)
    int8 = next(r for r in _record(cache)["results"] if r["backend"] == "openvino")
    assert "error" not in int8 and int8["seconds_per_clip"] > 0 and 0.5 < int8["cosine"] <= 1.0


def test_auto_excludes_an_int8_export_without_a_check(tiny, cache, int8_folder, monkeypatch):
    cfg_path = int8_folder / "emotionclip_export.json"
    saved = cfg_path.read_text()
    try:
        cfg = json.loads(saved)
        cfg["int8_check"] = None  # an export made before the check existed
        cfg_path.write_text(json.dumps(cfg))
        why = auto_mod.int8_check_failure(int8_folder)
        assert "records no held-out check" in why
        assert load_backend(tiny, "openvino", "int8").backend == "openvino-int8"  # explicit: runs
    finally:
        cfg_path.write_text(saved)
