import argparse
import math

import pytest

from emotionclip.train import TrainConfig
from emotionclip.train.cli import config_from_args, register


def _parse(argv):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def test_defaults_are_the_published_recipe():
    c = TrainConfig()
    assert (c.backbone, c.pretrained, c.temporal_fusion, c.head_layers, c.video_len) == (
        "ViT-B-32",
        "laion2b_e16",
        "transformer",
        6,
        8,
    )
    assert (c.batch_size, c.epochs) == (128, 25)
    assert (c.beta1, c.beta2, c.eps, c.weight_decay) == (0.98, 0.9, 1e-6, 0.1)
    assert (c.lr_gain_bias, c.lr_weights, c.lr_logit_scale) == (5e-5, 1e-8, None)  # None: lr_weights
    assert (c.warmup_steps, c.warmup_start_factor, c.min_lr) == (10_000, 1e-5, 1e-10)
    assert c.logit_scale_max == pytest.approx(math.log(100))
    assert (c.sentiment_scale, c.neutral_threshold) == (10.0, 0.05)
    assert c.wandb is False


def test_yaml_then_flags_override(tmp_path):
    yml = tmp_path / "run.yaml"
    yml.write_text("batch_size: 16\nlr-weights: 1e-6\nmax_steps: 50\nprecision: amp_bf16\n")
    args = _parse(
        [
            "--config",
            str(yml),
            "--batch-size",
            "4",
            "--no-wandb",
            "--max-steps",
            "none",
            "--pretrained",
            "none",
        ]
    )
    with pytest.warns(FutureWarning, match="'amp_bf16' is deprecated; use 'bf16'"):
        c = config_from_args(args)
    assert c.batch_size == 4  # flag beats YAML
    assert c.lr_weights == 1e-6 and isinstance(c.lr_weights, float)  # YAML's '1e-6' string converted
    assert c.max_steps is None and c.pretrained is None
    assert c.precision == "bf16"  # the old name still works (with a deprecation warning)
    assert c.epochs == 25  # untouched default
    round_trip = TrainConfig.from_dict(__import__("yaml").safe_load(c.to_yaml()))
    assert round_trip == c


def test_unknown_key_lists_valid_keys(tmp_path):
    yml = tmp_path / "bad.yaml"
    yml.write_text("batch_size: 8\nlearning_rate: 0.1\n")
    with pytest.raises(ValueError) as e:
        TrainConfig.from_yaml(yml)
    msg = str(e.value)
    assert str(yml) in msg and "learning_rate" in msg and "lr_gain_bias" in msg and "batch_size" in msg
    with pytest.raises(ValueError, match="unknown training config key"):
        TrainConfig.from_dict({"lr": 1.0})
    with pytest.raises(SystemExit):  # argparse rejects an unknown flag
        _parse(["--learning-rate", "0.1"])


@pytest.mark.parametrize(
    "values, match",
    [
        ({"batch_size": "many"}, "batch_size"),
        ({"precision": "fp8"}, "precision"),
        ({"grad_checkpointing": "maybe"}, "grad_checkpointing"),
        ({"epochs": None}, "cannot be None"),
        ({"epochs": 0}, "epochs"),
    ],
)
def test_bad_values_are_clear(values, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_dict(values)


def test_every_flag_has_its_help_from_the_field():
    from dataclasses import fields

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    helps = {a.dest: a.help for a in train_parser._actions}
    for f in fields(TrainConfig):
        assert f.metadata.get("help"), f"TrainConfig.{f.name} has no help metadata"
        assert helps[f.name].startswith(f.metadata["help"]), f.name


@pytest.mark.parametrize("old, new", [("amp_fp16", "fp16"), ("amp_bf16", "bf16")])
def test_old_precision_names_are_aliases(old, new):
    with pytest.warns(FutureWarning, match="deprecated"):
        assert TrainConfig.from_dict({"precision": old}).precision == new
    # "auto": what the device runs natively (the release's fp16 on pre-Ampere GPUs, fp32 on the CPU),
    # resolved when the run starts so that config.yaml records it
    assert TrainConfig().precision == "auto"
