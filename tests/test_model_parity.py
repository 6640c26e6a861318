"""The published release's numbers, reproduced from its checkpoint format with no config given."""

import json

import pytest
import torch

import emotionclip
from emotionclip.loss import ClipLoss, SentimentGuidedClipLoss

ATOL = 1e-4


@pytest.fixture(scope="module")
def reference(parity_dir):
    return torch.load(parity_dir / "inputs_and_outputs.pt", weights_only=True)


@pytest.fixture(scope="module")
def model(parity_dir):
    return emotionclip.load_model(parity_dir / "official_format_checkpoint.pt")


def test_architecture_inferred_from_shapes(model, parity_dir):
    meta = json.loads((parity_dir / "model_meta.json").read_text())
    backbone = json.loads((parity_dir / "backbone_config.json").read_text())
    cfg = model.config
    assert cfg.temporal_fusion == meta["temporal_fusion"]
    assert cfg.video_len == meta["video_len"]
    assert cfg.head_layers == meta["head_nlayer"]
    assert cfg.head_ffn == meta["temporal_dim_feedforward"]
    assert cfg.backbone["embed_dim"] == backbone["embed_dim"]
    for k, v in backbone["vision_cfg"].items():
        assert cfg.backbone["vision_cfg"][k] == v
    for k, v in backbone["text_cfg"].items():
        assert cfg.backbone["text_cfg"][k] == v
    assert not model.training


def test_features_match_release(model, reference):
    video = reference["video"].float()
    mask = reference["video_mask"].long()
    tokens = reference["tokens"]
    with torch.no_grad():
        torch.testing.assert_close(
            model.encode_video(video, mask), reference["video_features"], atol=ATOL, rtol=0
        )
        torch.testing.assert_close(
            model.encode_image(video[:, 0], mask[:, 0]), reference["image_features_frame0"], atol=ATOL, rtol=0
        )
        torch.testing.assert_close(model.encode_text(tokens), reference["text_features"], atol=ATOL, rtol=0)
        v, t, scale = model(video, mask, tokens)
    torch.testing.assert_close(v, reference["normalized_video_features"], atol=ATOL, rtol=0)
    torch.testing.assert_close(t, reference["normalized_text_features"], atol=ATOL, rtol=0)
    assert abs(scale.item() - float(reference["logit_scale_exp"])) < ATOL
    with torch.no_grad():
        clip = ClipLoss()(v, t, scale)
        guided = SentimentGuidedClipLoss(10.0)(v, t, scale, reference["sentiment_logits"])
    assert abs(clip.item() - float(reference["clip_loss"])) < ATOL
    assert abs(guided.item() - float(reference["sentiment_guided_loss_scale10"])) < ATOL


@pytest.mark.parametrize("mask_dtype", [torch.bool, torch.uint8, torch.int32, torch.float32])
def test_mask_dtypes_agree(model, reference, mask_dtype):
    video = reference["video"].float()[:2]
    mask = reference["video_mask"][:2]
    with torch.no_grad():
        out = model.encode_video(video, mask.to(mask_dtype))
    torch.testing.assert_close(out, reference["video_features"][:2], atol=ATOL, rtol=0)


def test_no_mask_equals_empty_mask(model, reference):
    video = reference["video"].float()[2:]  # sample 2 of the fixture has no subject
    with torch.no_grad():
        none = model.encode_video(video, None)
        empty = model.encode_video(video, torch.zeros(1, 4, 224, 224, dtype=torch.uint8))
    torch.testing.assert_close(none, reference["video_features"][2:], atol=ATOL, rtol=0)
    torch.testing.assert_close(none, empty)


def test_subject_mask_changes_features(model, reference):
    video = reference["video"].float()[:1]
    with torch.no_grad():
        with_subject = model.encode_video(video, reference["video_mask"][:1])
        without = model.encode_video(video, None)
    assert (with_subject - without).abs().max() > 1e-3


def test_tokenizer_reproduces_release_tokens(reference):
    assert torch.equal(emotionclip.tokenize(reference["texts"]), reference["tokens"])


def test_loss16_cases(reference):
    case = reference["loss16"]
    v, t = case["video_features"], case["text_features"]
    scale = torch.tensor(float(case["logit_scale_exp"]))
    assert abs(ClipLoss()(v, t, scale).item() - float(case["clip_loss"])) < ATOL
    for alpha, expected in case["sentiment_guided_loss"].items():
        got = SentimentGuidedClipLoss(float(alpha))(v, t, scale, case["sentiment_logits"])
        assert abs(got.item() - float(expected)) < ATOL, alpha


def test_default_model_matches_released_state_dict_shapes(parity_dir):
    expected = json.loads((parity_dir / "official_vit_b32_state_dict_shapes.json").read_text())
    sd = emotionclip.create_model().state_dict()
    assert sorted(sd) == sorted(expected)
    assert {k: list(v.shape) for k, v in sd.items()} == expected


# ---- the open_clip boundary: the private steps the frame encoder relies on -------------------------
def test_open_clip_is_in_the_tested_range():
    from pathlib import Path

    import open_clip
    from packaging.requirements import Requirement

    from emotionclip.model import OPEN_CLIP_TESTED

    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if not pyproject.is_file():
        pytest.skip("no pyproject.toml beside the tests")
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (req,) = [Requirement(d) for d in deps if d.startswith("open_clip_torch")]
    assert str(req.specifier) == str(Requirement(f"x{OPEN_CLIP_TESTED}").specifier)
    assert req.specifier.contains(open_clip.__version__), (
        f"open_clip {open_clip.__version__} is outside the range model.py was tested with ({req.specifier})"
    )


@pytest.fixture(scope="module")
def vit():
    cfg, _, _ = emotionclip.get_backbone_config("tiny")
    torch.manual_seed(0)
    return emotionclip.create_model(cfg).backbone.visual.eval()


def test_open_clip_embeds_is_patch_and_position_embedding_then_ln_pre(vit):
    x = torch.randn(2, 3, 224, 224)
    patches = vit.conv1(x).flatten(2).transpose(1, 2)
    cls = vit.class_embedding.expand(2, 1, -1)
    expected = vit.ln_pre(torch.cat([cls, patches], 1) + vit.positional_embedding)
    with torch.no_grad():
        torch.testing.assert_close(vit._embeds(x), expected)


def test_open_clip_forward_is_embeds_transformer_pool_proj(vit):
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        pooled, tokens = vit._pool(vit.transformer(vit._embeds(x)))
        assert pooled.shape == (2, vit.transformer.width) and tokens.shape[1] == vit.grid_size[0] ** 2
        torch.testing.assert_close(pooled @ vit.proj, vit(x))


def test_patch_dropout_keeps_the_subject_token():
    """open_clip drops patches inside _embeds; the subject token, appended after, always stays."""
    cfg, _, _ = emotionclip.get_backbone_config("tiny")
    cfg["vision_cfg"]["patch_dropout"] = 0.5
    model = emotionclip.create_model(cfg, video_len=2, head_layers=1).train()
    seen = []
    hook = model.backbone.visual.transformer.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape))
    model.encode_image(torch.randn(2, 3, 224, 224), torch.ones(2, 224, 224))
    hook.remove()
    assert seen[0][1] == 1 + 49 // 2 + 1  # class token, half the patches, subject token


def test_release_truncation_cuts_long_texts_without_the_end_token(model):
    long_text = " ".join(["I can't believe you would say that to me after everything"] * 12)
    short = "I can't believe you did that!"
    eot = emotionclip.tokenize([long_text, short])
    release = emotionclip.tokenize([long_text, short], truncation="release")
    assert eot[0, -1] == 49407 and (release[0] != 49407).all()  # no end token once cut
    assert torch.equal(release[0, :76], eot[0, :76])  # the same words before the cut
    assert torch.equal(release[1], eot[1])  # texts that fit are unchanged
    with torch.no_grad():
        a, b = model.encode_text(eot), model.encode_text(release)
    assert torch.allclose(a[1], b[1], atol=1e-6)
    # the release reads the long text's feature at its highest token id, not at an end token
    assert (a[0] - b[0]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="truncation must be one of"):
        emotionclip.tokenize(short, truncation="cut")
