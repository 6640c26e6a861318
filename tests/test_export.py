"""`emotionclip export`: ONNX / OpenVINO graphs that give the torch model's features."""

import json

import numpy as np
import pytest
import torch

import emotionclip
from emotionclip.export import ExportError, export_model, model_hash, read_export_config

pytest.importorskip("onnxruntime")


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min())


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return emotionclip.create_model("tiny").eval()


@pytest.fixture(scope="module")
def inputs(tiny):
    g = torch.Generator().manual_seed(1)
    s, t = tiny.image_size, tiny.video_len
    video = torch.randn(3, t, 3, s, s, generator=g)  # a batch size the export never saw
    mask = torch.zeros(3, t, s, s, dtype=torch.uint8)
    mask[0, :, 40:180, 60:160] = 1
    mask[1, ::2, :100] = 255
    tokens = emotionclip.tokenize(["a person feeling joy.", "I told you so!", "what?"])
    return video, mask, tokens


@pytest.fixture(scope="module")
def onnx_fp32(tiny, tmp_path_factory):
    return export_model(tiny, tmp_path_factory.mktemp("export") / "onnx-fp32", "onnx", "fp32")


def test_export_folder_holds_graphs_and_preprocessing(tiny, onnx_fp32):
    cfg = read_export_config(onnx_fp32)
    assert sorted(p.name for p in onnx_fp32.iterdir()) == sorted(
        ["emotionclip_export.json", "frame_encoder.onnx", "temporal_head.onnx", "text_encoder.onnx"]
    )
    tf = emotionclip.model_transform(tiny)
    pre = cfg["preprocess"]
    assert (pre["crop_size"], pre["resize"], pre["interpolation"]) == (tf.image_size, tf.resize, "bicubic")
    assert np.allclose(pre["mean"], tf.mean.flatten()) and np.allclose(pre["std"], tf.std.flatten())
    assert cfg["model_hash"] == model_hash(tiny) and cfg["video_len"] == tiny.video_len
    assert emotionclip.EmotionCLIPConfig.from_dict(cfg["model_config"]) == tiny.config


def test_graphs_have_a_dynamic_batch_and_the_mask_input(onnx_fp32):
    import onnx

    m = onnx.load(str(onnx_fp32 / "frame_encoder.onnx"))
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in m.graph.input}
    assert dims == {"pixels": ["batch", 3, 224, 224], "mask": ["batch", 224, 224]}


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_fp32_export_matches_torch(tiny, inputs, onnx_fp32, runtime):
    pytest.importorskip(runtime)
    video, mask, tokens = inputs
    model = emotionclip.load_runner(onnx_fp32, backend=runtime)
    assert model.backend == f"{runtime}-fp32"
    with torch.inference_mode():
        assert _cos(model.encode_video(video, mask), tiny.encode_video(video, mask)) > 0.99999
        assert _cos(model.encode_text(tokens), tiny.encode_text(tokens)) > 0.99999
        frames, fmask = video[:, 0], mask[:, 0]
        assert _cos(model.encode_image(frames, fmask), tiny.encode_image(frames, fmask)) > 0.99999
        # the subject mask reaches the graph: another mask, other features
        assert _cos(model.encode_image(frames, fmask), model.encode_image(frames, None)) < 0.99999
    assert (model.video_len, model.image_size, model.embed_dim) == (tiny.video_len, 224, tiny.embed_dim)
    assert float(model.logit_scale) == pytest.approx(float(tiny.logit_scale.detach()))


def test_onnx_int8_export_quantises_the_frame_encoder(tiny, inputs, tmp_path):
    video, mask, _ = inputs
    out = export_model(tiny, tmp_path / "int8", "onnx", "int8")
    cfg = json.loads((out / "emotionclip_export.json").read_text())
    assert cfg["precision"] == "int8" and "onnxruntime dynamic" in cfg["quantization"]
    model = emotionclip.load_runner(out, backend="onnxruntime")
    assert model.backend == "onnxruntime-int8"
    with torch.inference_mode():
        got, ref = model.encode_video(video, mask), tiny.encode_video(video, mask)
    # random tiny weights quantise worse than trained ones (ViT-B/32: see benchmarks/core_throughput.py)
    assert 0.98 < _cos(got, ref) < 0.999999
    with pytest.raises(ExportError, match="int8 export"):
        emotionclip.load_runner(out, backend="onnxruntime", precision="fp32")


@pytest.mark.slow
def test_openvino_int8_export_through_nncf(tiny, inputs, tmp_path):
    pytest.importorskip("nncf")
    video, mask, _ = inputs
    out = export_model(tiny, tmp_path / "ov-int8", "openvino", "int8")
    assert (out / "frame_encoder.xml").is_file() and "NNCF" in read_export_config(out)["quantization"]
    model = emotionclip.load_runner(out, backend="openvino")
    with torch.inference_mode():
        assert _cos(model.encode_video(video, mask), tiny.encode_video(video, mask)) > 0.98


def test_bad_requests_are_refused(tiny, onnx_fp32, tmp_path):
    with pytest.raises(ValueError, match="no bf16 kernels"):
        export_model(tiny, tmp_path / "x", "onnx", "bf16")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an export folder"):
        export_model(tiny, tmp_path / "mine", "onnx", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ExportError, match=r"^" + str(onnx_fp32).replace("\\", "\\\\") + ": already exists"):
        export_model(tiny, onnx_fp32, "onnx")


def test_incomplete_export_names_the_missing_graph(onnx_fp32, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(onnx_fp32, broken)
    (broken / "text_encoder.onnx").unlink()
    with pytest.raises(ExportError, match=r"broken: is incomplete: graphs \['text_encoder'\]"):
        emotionclip.load_runner(broken, backend="onnxruntime")


def test_export_cli(tiny, tmp_path):
    from emotionclip.cli import main

    ckpt = emotionclip.save_model(tiny, tmp_path / "model")
    assert main(["export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "x")]) == 0
    assert read_export_config(tmp_path / "x")["source"] == str(ckpt)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(tmp_path / "x")]) == 2  # exists


def test_export_leaves_the_callers_model_in_its_mode(tmp_path):
    torch.manual_seed(0)
    model = emotionclip.create_model("tiny").train()
    model.visual_head.eval()  # a mix of modes: each module's own flag comes back
    flags = [m.training for m in model.modules()]
    export_model(model, tmp_path / "e", "onnx", "fp32")
    assert [m.training for m in model.modules()] == flags and model.training
