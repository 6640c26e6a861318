import math

import pytest
import torch

from emotionclip.train import TrainConfig
from emotionclip.train.optim import WarmupCosineSchedule, build_optimizer
from emotionclip.train.step import build_model


@pytest.fixture(scope="module")
def tiny_config():
    return TrainConfig(backbone="tiny", pretrained=None, head_layers=1, epochs=4, warmup_steps=100)


def test_param_groups_follow_the_release(tiny_config):
    model = build_model(tiny_config)
    opt = build_optimizer(model, tiny_config, torch.device("cpu"))
    by_name = {g["name"]: g for g in opt.param_groups}
    assert set(by_name) == {"gain_bias", "weights", "logit_scale"}
    ids = {name: {id(p) for p in g["params"]} for name, g in by_name.items()}
    params = dict(model.named_parameters())
    assert ids["logit_scale"] == {id(params["logit_scale"])}  # one temperature, shared with CLIP
    assert model.backbone.logit_scale is params["logit_scale"]
    for name in (
        "backbone.visual.transformer.resblocks.0.ln_1.weight",
        "backbone.visual.conv1.weight",
        "backbone.ln_final.bias",
        "backbone.visual.class_embedding",
        "visual_head.fusion_layer.layers.0.linear1.bias",
    ):
        group = "weights" if name == "backbone.visual.conv1.weight" else "gain_bias"
        assert id(params[name]) in ids[group], name
    for name in (
        "backbone.token_embedding.weight",
        "backbone.text_projection",
        "visual_head.fusion_layer.layers.0.linear1.weight",
        "backbone.visual.proj",
    ):
        assert id(params[name]) in ids["weights"], name
    assert (
        by_name["gain_bias"]["weight_decay"],
        by_name["weights"]["weight_decay"],
        by_name["logit_scale"]["weight_decay"],
    ) == (0.0, 0.1, 0.0)
    assert opt.defaults["betas"] == (0.98, 0.9) and opt.defaults["eps"] == 1e-6
    trainable = sum(len(g["params"]) for g in opt.param_groups)
    assert trainable == sum(p.requires_grad for p in model.parameters())


def test_locked_towers_leave_the_optimizer(tiny_config):
    cfg = TrainConfig.from_dict({"lock_image": True, "lock_text": True}, base=tiny_config)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    trained = [names[id(p)] for g in opt.param_groups for p in g["params"]]
    assert trained and all(n.startswith("visual_head.") or n == "logit_scale" for n in trained)


def test_release_head_and_logit_scale_settings(tiny_config):
    model = build_model(tiny_config)
    by_name = {g["name"]: g for g in build_optimizer(model, tiny_config, torch.device("cpu")).param_groups}
    assert by_name["logit_scale"]["lr"] == pytest.approx(1e-8)  # follows lr_weights, as the release
    cfg = TrainConfig.from_dict(
        {"lr_head_gain_bias": 1e-3, "lr_head_weights": 2e-3, "weight_decay_head": 0.0, "lr_weights": 3e-4},
        base=tiny_config,
    )
    groups = {g["name"]: g for g in build_optimizer(model, cfg, torch.device("cpu")).param_groups}
    assert set(groups) == {"gain_bias", "weights", "logit_scale", "head_gain_bias", "head_weights"}
    assert (groups["head_weights"]["lr"], groups["head_weights"]["weight_decay"]) == (2e-3, 0.0)
    assert groups["head_gain_bias"]["lr"] == 1e-3 and groups["logit_scale"]["lr"] == 3e-4
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].startswith("visual_head.") for p in groups["head_weights"]["params"])
    assert not any(names[id(p)].startswith("visual_head.") for p in groups["weights"]["params"])


def test_warmup_then_cosine_per_epoch(tiny_config):
    model = build_model(tiny_config)
    opt = build_optimizer(model, tiny_config, torch.device("cpu"))
    sched = WarmupCosineSchedule(opt, tiny_config, steps_per_epoch=200)  # warm-up ends in epoch 0
    lrs = sched.current_lrs()
    assert lrs["gain_bias"] == pytest.approx(5e-5 * 1e-5) and lrs["weights"] == pytest.approx(1e-8 * 1e-5)
    for _ in range(50):
        sched.step()
    assert sched.current_lrs()["gain_bias"] == pytest.approx(5e-5 * 1e-5 * 0.5 + 5e-5 * 0.5)
    for _ in range(50):
        sched.step()
    assert sched.current_lrs()["gain_bias"] == pytest.approx(5e-5)  # warm-up done, epoch 0
    sched.set_epoch(2)  # half-way through 4 epochs: cosine at its midpoint
    assert sched.current_lrs()["gain_bias"] == pytest.approx(1e-10 + (5e-5 - 1e-10) * 0.5)
    sched.set_epoch(4)
    assert sched.current_lrs()["weights"] == pytest.approx(1e-10)
    state = sched.state_dict()
    other = WarmupCosineSchedule(build_optimizer(model, tiny_config, torch.device("cpu")), tiny_config, 200)
    other.load_state_dict(state)
    assert other.current_lrs() == sched.current_lrs()
    assert math.isclose(sched.lr_at(1.0, 0, 0), 1e-5)
