"""The published recipe, replayed: six release steps on fixed batches, temperature, fine-tuning."""

from __future__ import annotations

import math
import subprocess
import sys

import open_clip
import pytest
import torch

from _train_util import micro_backbone
from emotionclip import create_model, load_model
from emotionclip.train import TrainConfig, train
from emotionclip.train.loop import build_model
from emotionclip.train.optim import WarmupCosineSchedule, build_optimizer

RELEASE_GROUPS = {  # the release's seven groups -> ours
    "frame_gb": "gain_bias",
    "text_gb": "gain_bias",
    "head_gb": "gain_bias",
    "frame_rest": "weights",
    "text_rest": "weights",
    "head_rest": "weights",
    "logit_scale": "logit_scale",
}


@pytest.fixture(scope="module")
def recipe(shared_dir):
    path = shared_dir / "fixtures" / "recipe-parity" / "trajectory.pt"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    return torch.load(path, weights_only=True)


def _start_checkpoint(parity_dir, tmp_path, scale: float):
    ckpt = torch.load(parity_dir / "official_format_checkpoint.pt", weights_only=True)
    value = torch.tensor(scale, dtype=torch.float16)
    ckpt["model"]["logit_scale"] = ckpt["model"]["backbone.logit_scale"] = value
    path = tmp_path / "start.pt"
    torch.save(ckpt, path)
    return path


def test_the_release_run_replays(recipe, parity_dir, tmp_path):
    c = recipe["config"]
    config = TrainConfig(
        output=str(tmp_path / "run"),
        init=str(_start_checkpoint(parity_dir, tmp_path, c["init_logit_scale"])),
        head_dropout=0.0,
        batch_size=c["batch_size"],
        steps_per_epoch=c["steps_per_epoch"],
        epochs=c["epochs"],
        lr_gain_bias=c["lr_gb"],
        lr_weights=c["lr_rest"],
        weight_decay=c["weight_decay"],
        beta1=c["beta1"],
        beta2=c["beta2"],
        eps=c["eps"],
        warmup_steps=c["warmup_steps"],
        warmup_start_factor=c["warmup_init_factor"],
        min_lr=c["lr_min"],
        sentiment_scale=c["sentiment_scale"],
        precision="fp32",
        device="cpu",
        save_every=0,
    )
    batches = [
        {
            "video": (b["video_u8"].float() - 128) / 64,
            "video_mask": b["video_mask"],
            "tokens": b["tokens"],
            "sentiment_logits": b["sentiment_logits"],
        }
        for b in recipe["batches"]
    ]
    per_epoch = c["steps_per_epoch"]
    result = train(config, batches=lambda e: batches[e * per_epoch : (e + 1) * per_epoch])

    assert len(result.history) == len(recipe["records"]) == 6
    for ours, ref in zip(result.history, recipe["records"], strict=True):
        assert ours["epoch"] == ref["epoch"]
        assert ours["loss"] == pytest.approx(ref["loss"], abs=1e-4), ref["step"]
        for group, lr in ref["lrs"].items():
            assert ours["lr"][RELEASE_GROUPS[group]] == pytest.approx(lr, rel=1e-6), (ref["step"], group)
        assert ours["logit_scale"] == pytest.approx(ref["logit_scale_after"], abs=1e-6), ref["step"]

    final = load_model(result.checkpoint).state_dict()
    for name, ref in recipe["final_state_dict"].items():
        tol = 2e-3 if name.endswith("in_proj_bias") else 1e-4
        err = (final[name].float() - ref.float()).abs().max().item()
        assert err <= tol, (name, err)
    assert final["logit_scale"] == final["backbone.logit_scale"]


def test_warmup_ends_at_the_cosine_of_its_own_epoch():
    # warm-up of 10 steps, 4 steps per epoch: the target is cosine(epoch 2), whatever the current epoch
    config = TrainConfig(backbone="tiny", pretrained=None, head_layers=1, epochs=4, warmup_steps=10)
    model = build_model(config)
    sched = WarmupCosineSchedule(build_optimizer(model, config, torch.device("cpu")), config, 4)
    base, low, f = 5e-5, 1e-10, 1e-5
    target = low + (base - low) * 0.5 * (1 + math.cos(math.pi * 2 / 4))
    assert sched.current_lrs()["gain_bias"] == pytest.approx(base * f, rel=1e-9)
    for _ in range(5):
        sched.step()
    sched.set_epoch(1)
    assert sched.current_lrs()["gain_bias"] == pytest.approx(base * f * 0.5 + target * 0.5, rel=1e-9)
    for _ in range(5):
        sched.step()
    sched.set_epoch(2)
    assert sched.current_lrs()["gain_bias"] == pytest.approx(target, rel=1e-9)
    sched.set_epoch(3)
    assert sched.current_lrs()["gain_bias"] == pytest.approx(
        low + (base - low) * 0.5 * (1 + math.cos(math.pi * 3 / 4)), rel=1e-9
    )


def _clip_file(tmp_path, scale: float) -> tuple[str, str]:
    """A randomly initialised OpenCLIP state dict of the micro backbone, saved as a local .pth."""
    import json

    backbone = micro_backbone(tmp_path)
    cfg = json.loads(open(backbone).read())
    clip = open_clip.CLIP(cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"])
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(scale))
    path = tmp_path / "open_clip_micro.pth"
    torch.save(clip.state_dict(), path)
    return backbone, str(path)


def test_temperature_is_inherited_from_clip_and_shared(tmp_path):
    backbone, weights = _clip_file(tmp_path, 37.0)
    model = create_model(backbone, pretrained=weights, video_len=4, head_layers=1)
    assert model.logit_scale.exp().item() == pytest.approx(37.0, rel=1e-5)
    assert model.logit_scale is model.backbone.logit_scale
    reset = build_model(
        TrainConfig(backbone=backbone, pretrained=weights, video_len=4, head_layers=1, reset_logit_scale=True)
    )
    assert reset.logit_scale.exp().item() == pytest.approx(1 / 0.07, rel=1e-5)


def test_old_checkpoints_keep_their_trained_temperature(parity_dir):
    ckpt = torch.load(parity_dir / "official_format_checkpoint.pt", weights_only=True)
    sd = {k: v.float() for k, v in ckpt["model"].items()}
    sd["logit_scale"] = torch.tensor(1.5)  # trained; the backbone key holds CLIP's stale value
    model = load_model(parity_dir / "official_format_checkpoint.pt")
    model.load_state_dict(sd)
    assert model.backbone.logit_scale.item() == model.logit_scale.item() == 1.5


def test_fine_tune_from_the_release_checkpoint_via_cli(parity_dir, tmp_path):
    from _train_util import write_shards

    pattern = write_shards(tmp_path / "shards", n_shards=2, clips_per_shard=4, frames=5, size=240)
    out = tmp_path / "ft"
    cmd = [
        sys.executable, "-m", "emotionclip", "train", "--data", pattern, "--output", str(out),
        "--init", str(parity_dir / "official_format_checkpoint.pt"), "--batch-size", "2",
        "--max-steps", "2", "--precision", "fp32", "--device", "cpu", "--workers", "0",
        "--warmup-steps", "0", "--lr-gain-bias", "1e-3", "--lr-weights", "1e-3",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    start = load_model(parity_dir / "official_format_checkpoint.pt")
    tuned = load_model(sorted((out / "checkpoints").glob("step-*.pt"))[-1])
    assert tuned.config.video_len == 4 and tuned.config.head_layers == 2  # taken from the file
    diff = (tuned.backbone.visual.conv1.weight - start.backbone.visual.conv1.weight).abs().max()
    assert diff > 0
