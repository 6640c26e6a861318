"""`TrainConfig`: the published EmotionCLIP recipe as defaults, overridable from YAML and flags.

Precedence: dataclass defaults < YAML file (``--config``) < command-line flags. The resolved
config is printed and written to ``<output>/config.yaml`` by the training loop.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

PRECISIONS = ("fp32", "amp_fp16", "amp_bf16")
CROPS = ("frame", "clip")
DATA_ORDERS = ("uniform", "stream")


@dataclass
class TrainConfig:
    # ---- data ------------------------------------------------------------------------------
    data: str = ""  # WebDataset shard URL(s), brace notation; several patterns joined with '::'
    output: str = ""  # run folder: config, checkpoints, TensorBoard events, loss curve
    video_len: int = 8
    batch_size: int = 128  # per process (the release: 128 per GPU)
    workers: int = 8  # data-loader worker processes per training process
    neutral_threshold: float = 0.05  # clips whose neutral sentiment score is below are kept
    min_person_fraction: float = 0.0  # keep clips with a person in >= this fraction of frames (release: all)
    crop: str = "frame"  # random 224 crop per frame (the release) or one per clip ("clip")
    data_order: str = "uniform"  # uniform shuffle over every clip (the release) or "stream" (shard order)
    epochs: int = 25
    steps_per_epoch: int | None = None  # None: one pass over the shards is an epoch
    max_steps: int | None = None  # stop after this many optimiser steps in total (smoke runs)

    # ---- model -----------------------------------------------------------------------------
    backbone: str = "ViT-B-32"
    pretrained: str | None = "laion2b_e16"  # open_clip tag or local file; None = random init
    init: str | None = None  # EmotionCLIP checkpoint to fine-tune (architecture from the file)
    temporal_fusion: str = "transformer"
    head_layers: int = 6
    head_dropout: float = 0.1  # temporal transformer dropout (torch's default, as the release)
    reset_logit_scale: bool = False  # start the temperature at 1/0.07 instead of the init weights'

    # ---- loss ------------------------------------------------------------------------------
    sentiment_scale: float = 10.0  # alpha of the sentiment-guided loss
    local_loss: bool = False
    gather_with_grad: bool = False

    # ---- optimiser and schedule (the release's values) --------------------------------------
    lr_gain_bias: float = 5e-5  # gains (norm weights, 1-d params) and biases, weight decay 0
    lr_weights: float = 1e-8  # every other weight, with `weight_decay`
    lr_logit_scale: float | None = None  # weight decay 0; None: lr_weights (the release)
    weight_decay: float = 0.1
    # the temporal head's own settings (the release's lr_head_gb / lr_head_rest / weight_decay_head);
    # None: the same as the CLIP towers'
    lr_head_gain_bias: float | None = None
    lr_head_weights: float | None = None
    weight_decay_head: float | None = None
    beta1: float = 0.98
    beta2: float = 0.9
    eps: float = 1e-6
    warmup_steps: int = 10_000  # linear from lr * warmup_start_factor to the cosine value of
    warmup_start_factor: float = 1e-5  # epoch warmup_steps // steps-per-epoch (the release's 'auto')
    min_lr: float = 1e-10  # cosine (per epoch) end point
    logit_scale_max: float = math.log(100.0)  # clamp after each step to [0, this]

    # ---- precision and memory --------------------------------------------------------------
    precision: str = "amp_fp16"  # fp32 | amp_fp16 | amp_bf16 (bf16 also on CPU)
    grad_checkpointing: bool = False
    lock_image: bool = False  # freeze the frame encoder's CLIP vision tower
    lock_text: bool = False  # freeze the CLIP text tower
    compile: bool = False  # torch.compile the model (GPU)
    fused_adamw: bool = True  # fused AdamW kernel (CUDA and CPU)

    # ---- run -------------------------------------------------------------------------------
    seed: int = 2022
    device: str = "auto"  # auto | cpu | cuda
    dist_timeout_min: int = 30
    log_every: int = 10  # TensorBoard / progress-bar update interval (steps)
    save_every: int = 1000  # checkpoint every N steps (and at every epoch end); 0 = epochs only
    keep_step_checkpoints: int = 2  # step checkpoints kept (epoch checkpoints are all kept)
    eval_every: int = 1000  # steps between evaluator calls (when an evaluator is given)
    resume: str | None = None  # 'latest', 'auto' (latest if any, else start) or a checkpoint path
    wandb: bool = False
    wandb_project: str = "emotionclip"

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("batch_size", "epochs", "video_len", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.data_order not in DATA_ORDERS:
            raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {self.data_order!r}")
        if self.workers < 0 or self.warmup_steps < 0 or self.save_every < 0 or self.eval_every < 0:
            raise ValueError("workers, warmup_steps, save_every and eval_every must be >= 0")

    # ---- conversions -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def valid_keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
        """``base`` (or the defaults) with ``values`` applied; unknown keys are an error."""
        unknown = sorted(set(values) - set(cls.valid_keys()))
        if unknown:
            raise ValueError(
                f"unknown training config key(s) {unknown}; valid keys: {', '.join(cls.valid_keys())}"
            )
        merged = (base or cls()).to_dict()
        merged.update({k: _coerce(k, v) for k, v in values.items()})
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise ValueError(f"{path}: cannot read training config: {e}") from e
        if not isinstance(values, dict):
            raise ValueError(f"{path}: training config must be a mapping of key: value")
        values = {str(k).replace("-", "_"): v for k, v in values.items()}
        try:
            config = cls.from_dict(values)
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e
        return cls.from_dict(overrides or {}, base=config)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def field_type(name: str) -> type:
    """The scalar type of a config field (``int | None`` -> int)."""
    hints = typing.get_type_hints(TrainConfig)
    hint = hints[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _coerce(name: str, value: Any) -> Any:
    """YAML gives `1e-8` as a string and users write `null`/`none`; convert to the field's type."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        default = {f.name: f.default for f in fields(TrainConfig)}[name]
        optional = "None" in str(typing.get_type_hints(TrainConfig)[name])
        if not optional:
            raise ValueError(f"config key {name!r} cannot be None (default {default!r})")
        return None
    kind = field_type(name)
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ValueError(f"config key {name!r} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {name!r} must be {kind.__name__}, got {value!r}") from None
