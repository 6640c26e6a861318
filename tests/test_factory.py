"""Creating, initialising, saving and loading models — and refusing what is not a model."""

import warnings

import open_clip
import pytest
import torch
from safetensors.torch import save_file

import emotionclip
from emotionclip import CheckpointError


def _tiny_clip(quick_gelu: bool) -> open_clip.CLIP:
    cfg, _, _ = emotionclip.get_backbone_config("tiny")
    torch.manual_seed(0)
    return open_clip.CLIP(**cfg, quick_gelu=quick_gelu)


def _assert_towers_equal(model: emotionclip.EmotionCLIP, source: dict) -> None:
    target = model.backbone.state_dict()
    for k, v in source.items():
        if k in ("input_resolution", "context_length", "vocab_size"):
            continue
        assert torch.equal(target[k], v), k


def test_init_from_openai_torchscript_archive(tmp_path):
    clip = _tiny_clip(quick_gelu=True)
    # what OpenAI's release archives carry besides the weights
    for name, value in (("input_resolution", 224), ("context_length", 77), ("vocab_size", 49408)):
        if hasattr(clip, name):
            delattr(clip, name)
        clip.register_buffer(name, torch.tensor(value))
    path = tmp_path / "ViT-tiny.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(clip).save(str(path))
    model = emotionclip.create_model("tiny", pretrained=str(path), video_len=4, head_layers=1)
    _assert_towers_equal(model, clip.state_dict())
    assert model.config.quick_gelu, "OpenAI weights were trained with QuickGELU"
    # the towers compute what the source CLIP computes
    clip.eval(), model.eval()
    tokens = emotionclip.tokenize(["a person smiling"])
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), clip.encode_text(tokens))


def test_init_from_openai_state_dict(tmp_path):
    clip = _tiny_clip(quick_gelu=True)
    path = tmp_path / "openai_state_dict.pt"
    torch.save(clip.state_dict(), path)
    model = emotionclip.create_model("tiny", pretrained=path, quick_gelu=True, video_len=4, head_layers=1)
    _assert_towers_equal(model, clip.state_dict())


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_init_from_openclip_file(tmp_path, fmt):
    clip = _tiny_clip(quick_gelu=False)
    sd = clip.state_dict()
    if fmt == "pth":  # open_clip training checkpoints wrap a DDP state dict
        path = tmp_path / "epoch_16.pth"
        torch.save(
            {"epoch": 16, "name": "run", "state_dict": {f"module.{k}": v for k, v in sd.items()}}, path
        )
    else:
        path = tmp_path / "open_clip_model.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items()}, path)
    model = emotionclip.create_model("tiny", pretrained=path, video_len=4, head_layers=1)
    _assert_towers_equal(model, sd)
    assert not model.config.quick_gelu
    image = torch.randn(2, 3, 224, 224)
    clip.eval(), model.eval()
    with torch.no_grad():
        # no subject: the extra token is zero but still attends, so only text is exactly CLIP's
        torch.testing.assert_close(
            model.encode_text(emotionclip.tokenize(["x", "y"])),
            clip.encode_text(emotionclip.tokenize(["x", "y"])),
        )
        assert model.encode_image(image).shape == (2, 64)


def test_unknown_pretrained_tag_is_clear():
    with pytest.raises(ValueError, match="neither an existing file nor an open_clip tag"):
        emotionclip.create_model("tiny", pretrained="no-such-tag")


def test_clip_weights_of_another_size_are_refused(tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(_tiny_clip(False).state_dict(), path)
    with pytest.raises(CheckpointError, match="do not fit backbone"):
        emotionclip.create_model("ViT-B-32", pretrained=path)


@pytest.mark.parametrize("fusion", ["transformer", "mean", "conv1d"])
def test_save_load_round_trip(tmp_path, fusion):
    torch.manual_seed(1)
    model = emotionclip.create_model("tiny", temporal_fusion=fusion, video_len=5, head_layers=2).eval()
    out = emotionclip.save_model(model, tmp_path / "m")
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    for source in (out, out / "model.safetensors"):
        loaded = emotionclip.load_model(source)
        assert loaded.config == model.config
        for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert k == k2 and torch.equal(a, b), k
    video = torch.randn(1, 5, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model.encode_video(video), loaded.encode_video(video))


def test_save_refuses_to_overwrite(tmp_path):
    model = emotionclip.create_model("tiny", video_len=2, head_layers=1)
    emotionclip.save_model(model, tmp_path / "m")
    with pytest.raises(FileExistsError):
        emotionclip.save_model(model, tmp_path / "m")
    emotionclip.save_model(model, tmp_path / "m", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("fusion", ["transformer", "mean", "conv1d"])
def test_official_format_round_trip_infers_head(tmp_path, fusion):
    model = emotionclip.create_model("tiny", temporal_fusion=fusion, video_len=6, head_layers=3)
    path = tmp_path / "official.pt"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    loaded = emotionclip.load_model(path)
    assert loaded.config.temporal_fusion == fusion
    if fusion == "transformer":
        assert (loaded.config.video_len, loaded.config.head_layers) == (6, 3)


def test_trainer_style_checkpoint_with_config(tmp_path):
    model = emotionclip.create_model("tiny", video_len=3, head_layers=1, head_heads=4)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in model.state_dict().items()},
            "model_config": model.config.to_dict(),
            "step": 10,
        },
        path,
    )
    assert emotionclip.load_model(path).config.head_heads == 4


# ---- bad input: clear errors naming the problem ----------------------------------------------
def test_truncated_checkpoint(parity_dir, tmp_path):
    data = (parity_dir / "official_format_checkpoint.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        emotionclip.load_model(path)


def test_truncated_safetensors(tmp_path):
    model = emotionclip.create_model("tiny", video_len=2, head_layers=1)
    out = emotionclip.save_model(model, tmp_path / "m") / "model.safetensors"
    out.write_bytes(out.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated"):
        emotionclip.load_model(out)


def test_checkpoint_of_another_model(tmp_path):
    import torchvision

    path = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(CheckpointError, match="not an EmotionCLIP checkpoint"):
        emotionclip.load_model(path)
    with pytest.raises(CheckpointError, match="not an OpenAI/OpenCLIP ViT CLIP checkpoint"):
        emotionclip.create_model("tiny", pretrained=path)


def test_plain_clip_checkpoint_to_load_model(tmp_path):
    path = tmp_path / "clip.pt"
    torch.save(_tiny_clip(False).state_dict(), path)
    with pytest.raises(CheckpointError, match="plain CLIP checkpoint"):
        emotionclip.load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        emotionclip.load_model(tmp_path / "nope.pt")


def test_pickled_code_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        emotionclip.load_model(path)


@pytest.fixture(scope="module")
def tiny():
    return emotionclip.create_model("tiny", video_len=4, head_layers=1).eval()


def test_video_of_wrong_rank(tiny):
    with pytest.raises(ValueError, match=r"video must be \[B, T, 3, H, W\]"):
        tiny.encode_video(torch.randn(4, 3, 224, 224))


def test_mask_size_differs_from_frames(tiny):
    with pytest.raises(ValueError, match="video_mask must be"):
        tiny.encode_video(torch.randn(1, 4, 3, 224, 224), torch.ones(1, 4, 112, 112))
    with pytest.raises(ValueError, match="image_mask must be"):
        tiny.encode_image(torch.randn(2, 3, 224, 224), torch.ones(2, 224, 200))


def test_clip_longer_than_position_table(tiny):
    with pytest.raises(ValueError, match="frame-position table holds 4"):
        tiny.encode_video(torch.randn(1, 5, 3, 224, 224))


def test_wrong_frame_size(tiny):
    with pytest.raises(ValueError, match=r"frames must be \[3, 224, 224\]"):
        tiny.encode_video(torch.randn(1, 4, 3, 256, 256))


def test_bad_tokens(tiny):
    with pytest.raises(ValueError, match="tokens must"):
        tiny.encode_text(torch.randn(2, 77))
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 49408\)"):
        tiny.encode_text(torch.full((1, 77), 49408))


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        emotionclip.create_model("ViT-Nope")


# ---- preprocessing travels with the model ----------------------------------------------------
def test_preprocessing_is_saved_with_the_model(tmp_path):
    from emotionclip.transform import model_transform

    custom = {"resize": 240, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "box_score_threshold": 0.7}
    model = emotionclip.create_model("tiny", video_len=2, head_layers=1, preprocess=custom)
    loaded = emotionclip.load_model(emotionclip.save_model(model, tmp_path / "m"))
    assert loaded.config.preprocess == model.config.preprocess
    tf = model_transform(loaded)
    assert (tf.image_size, tf.resize, tf.box_score_threshold) == (224, 240, 0.7)
    torch.testing.assert_close(tf.std.flatten(), torch.full((3,), 0.25))
    _, train_tf, eval_tf = emotionclip.create_model_and_transforms("tiny", preprocess=custom)
    assert train_tf.train and not eval_tf.train and eval_tf.resize == 240


def test_release_checkpoint_gets_release_preprocessing(parity_dir):
    cfg = emotionclip.load_model(parity_dir / "official_format_checkpoint.pt").config.preprocess
    assert (cfg.crop_size, cfg.resize, cfg.interpolation, cfg.box_score_threshold) == (
        224,
        256,
        "bicubic",
        0.5,
    )
    assert cfg.mean == emotionclip.IMAGENET_MEAN and cfg.std == emotionclip.IMAGENET_STD


def test_config_of_version_0_1_still_loads(tmp_path):
    import json

    model = emotionclip.create_model("tiny", video_len=2, head_layers=1)
    out = emotionclip.save_model(model, tmp_path / "m")
    old = model.config.to_dict()
    del old["preprocess"]
    (out / "config.json").write_text(json.dumps({**old, "extra": {}}))  # what 0.1 wrote
    assert emotionclip.load_model(out).config == model.config


def test_crop_size_must_match_the_tower():
    with pytest.raises(ValueError, match="crop_size 256 differs"):
        emotionclip.create_model("tiny", preprocess={"crop_size": 256, "resize": 288})


# ---- temporal heads ----------------------------------------------------------------------------
def test_temporal_heads_table():
    from emotionclip.model import TEMPORAL_HEADS, MeanFusion

    assert set(TEMPORAL_HEADS) == {"transformer", "mean", "conv1d"}
    assert isinstance(emotionclip.create_model("tiny", temporal_fusion="mean").visual_head, MeanFusion)
    with pytest.raises(ValueError, match=r"unknown temporal_fusion 'lstm'; choose one of \['conv1d'"):
        emotionclip.create_model("tiny", temporal_fusion="lstm")


def test_conv1d_head_needs_three_frames():
    model = emotionclip.create_model("tiny", temporal_fusion="conv1d", video_len=4)
    with pytest.raises(ValueError, match="at least 3 frames"):
        model.encode_video(torch.randn(1, 2, 3, 224, 224))


# ---- token ids: checked where they enter, never read back in the training forward ---------------
def test_training_forward_reads_no_values_off_the_device():
    """On the meta device any read of a value raises, so this forward provably does not sync."""
    model = emotionclip.create_model("tiny", video_len=4, head_layers=1).to("meta").train()
    tokens = torch.empty(2, 77, dtype=torch.long, device="meta")
    video, mask = torch.empty(2, 4, 3, 224, 224, device="meta"), torch.empty(2, 4, 224, 224, device="meta")
    v, t, _ = model(video, mask, tokens)
    assert v.shape == t.shape == (2, 64)
    with pytest.raises(RuntimeError, match="meta"):  # the public entry does check the ids
        model.encode_text(tokens)


def test_out_of_vocabulary_ids_in_a_cpu_forward(tiny):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 49408\)"):
        tiny(torch.randn(1, 4, 3, 224, 224), None, torch.full((1, 77), -1))
