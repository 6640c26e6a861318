"""Loading hostile or broken model files: refused at load time, with the file and the problem named."""

import json

import pytest
import torch
from safetensors.torch import save_file

import emotionclip
from emotionclip import CheckpointError


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return emotionclip.create_model("tiny", video_len=3, head_layers=1)


def test_non_finite_weights_are_refused(tiny, tmp_path):
    """A diverged run: NaN in one tensor, inf in another; both formats name the file and tensors."""
    sd = {k: v.clone() for k, v in tiny.state_dict().items()}
    sd["backbone.visual.conv1.weight"][0, 0, 0, 0] = float("nan")
    sd["visual_head.fusion_layer.layers.0.linear1.bias"][3] = float("inf")
    official = tmp_path / "diverged.pt"
    torch.save({"model": sd}, official)
    folder = emotionclip.save_model(tiny, tmp_path / "m")
    save_file({k: v.contiguous() for k, v in sd.items()}, folder / "model.safetensors")
    for path, weights in ((official, official), (folder, folder / "model.safetensors")):
        with pytest.raises(CheckpointError) as e:
            emotionclip.load_model(path)
        msg = str(e.value)
        assert msg.startswith(f"{weights}: 2 of ") and "NaN or infinite" in msg
        assert (
            "backbone.visual.conv1.weight" in msg and "visual_head.fusion_layer.layers.0.linear1.bias" in msg
        )


def test_config_claiming_a_huge_model_is_checked_before_building(tiny, tmp_path, monkeypatch):
    folder = emotionclip.save_model(tiny, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    config["backbone"]["vision_cfg"].update(layers=2000, width=4096)
    (folder / "config.json").write_text(json.dumps(config))

    def refuse_to_build(*args, **kwargs):
        raise AssertionError("a model was built before the config was checked against the weights")

    monkeypatch.setattr("emotionclip.factory.EmotionCLIP", refuse_to_build)
    with pytest.raises(CheckpointError) as e:
        emotionclip.load_model(folder)
    msg = str(e.value)
    assert msg.startswith(f"{folder / 'model.safetensors'}: model config does not match the weights' shapes")
    assert (
        "vision_cfg.layers: config 2000 vs weights 2" in msg
        and "vision_cfg.width: config 4096 vs weights 64" in msg
    )
    # an override is a claim too
    monkeypatch.undo()
    with pytest.raises(CheckpointError, match="head_layers: config 500 vs weights 1"):
        emotionclip.load_model(folder / "model.safetensors", head_layers=500)


def test_pickle_refusal_keeps_torchs_explanation(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError) as e:
        emotionclip.load_model(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: cannot be read with torch.load(weights_only=True)")
    assert "arbitrary code execution" in msg and "weights_only" in msg and "GLOBAL print" in msg
    assert len(msg) > 400 and "\x1b[" not in msg  # whole, without terminal colour codes
    assert "pwned" not in capsys.readouterr().out


def test_config_with_a_fractional_mlp_ratio_still_fits(tmp_path):
    """open_clip builds int(width * mlp_ratio) units; the check compares that, not the ratio."""
    cfg, _, _ = emotionclip.get_backbone_config("tiny")
    cfg["vision_cfg"]["mlp_ratio"] = 4.3637  # as ViT-g-14 has
    model = emotionclip.create_model(cfg, video_len=2, head_layers=1)
    loaded = emotionclip.load_model(emotionclip.save_model(model, tmp_path / "m"))
    assert loaded.config.backbone["vision_cfg"]["mlp_ratio"] == 4.3637
