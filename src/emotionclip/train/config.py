"""`TrainConfig`: the published EmotionCLIP recipe as defaults, overridable from YAML and flags.

Precedence: dataclass defaults < YAML file (``--config``) < command-line flags. The resolved
config is logged once and written to ``<output>/config.yaml`` by the training loop. Each field's
``metadata["help"]`` is its flag's help text (``emotionclip train --help``), so flags and docs
cannot drift.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from emotionclip.precision import PRECISIONS

_OLD_PRECISIONS = {"amp_fp16": "fp16", "amp_bf16": "bf16"}  # names before the one precision policy
CROPS = ("frame", "clip")
DATA_ORDERS = ("uniform", "stream")
NONFINITE = ("stop", "skip")


def _opt(default: Any, help: str) -> Any:
    """A config field with the help text that ``emotionclip train --help`` shows for its flag."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainConfig:
    # ---- data ------------------------------------------------------------------------------
    data: str = _opt(
        "",
        "WebDataset shard URL(s), brace notation, several joined with '::' "
        "(e.g. 'corpus/shard-{000000..000099}.tar'), or a folder written by `emotionclip prepare`",
    )
    output: str = _opt("", "run folder (config, checkpoints, TensorBoard events, loss curve)")
    video_len: int = _opt(8, "frames per clip")
    batch_size: int = _opt(128, "clips per process and step (the release: 128 per GPU)")
    workers: int = _opt(8, "data-loader worker processes per training process")
    neutral_threshold: float = _opt(0.05, "keep only clips whose neutral sentiment probability is below this")
    min_person_fraction: float = _opt(
        0.0, "skip clips with a person in fewer than this fraction of frames (0 keeps all, the release)"
    )
    crop: str = _opt("frame", "random crop per 'frame' (the release) or one per 'clip'")
    text_truncation: str = _opt(
        "eot",
        "texts over 77 tokens: 'eot' cuts them ending with the end token (CLIP's rule); 'release' keeps "
        "the first 77 tokens with no end token, as the release's tokenizer",
    )
    data_order: str = _opt(
        "uniform", "'uniform': shuffle over every clip (the release); 'stream': shard order + buffer"
    )
    epochs: int = _opt(25, "epochs")
    steps_per_epoch: int | None = _opt(
        None, "steps that make an epoch, shards resampled ('none' = one pass over the shards)"
    )
    max_steps: int | None = _opt(None, "stop after this many optimiser steps in total (smoke runs)")

    # ---- model -----------------------------------------------------------------------------
    backbone: str = _opt(
        "ViT-B-32", "open_clip model name, a backbone shipped with emotionclip ('tiny') or a JSON config"
    )
    pretrained: str | None = _opt(
        "laion2b_e16", "open_clip tag or local CLIP weights file; 'none' = random init"
    )
    init: str | None = _opt(
        None, "fine-tune this EmotionCLIP checkpoint (release format or ours; architecture from the file)"
    )
    temporal_fusion: str = _opt("transformer", "transformer, mean or conv1d")
    head_layers: int = _opt(6, "temporal transformer layers")
    head_dropout: float = _opt(0.1, "dropout of the temporal transformer (torch's default, as the release)")
    reset_logit_scale: bool = _opt(
        False, "start the temperature at 1/0.07 instead of the initial weights' (the release's option)"
    )

    # ---- loss ------------------------------------------------------------------------------
    sentiment_scale: float = _opt(10.0, "alpha of the sentiment-guided loss (0 = plain CLIP loss)")
    local_loss: bool = _opt(False, "each rank's rows against all columns (less memory across GPUs)")
    gather_with_grad: bool = _opt(
        False, "back-propagate through the cross-rank feature gather (exact gradients)"
    )

    # ---- optimiser and schedule (the release's values) --------------------------------------
    lr_gain_bias: float = _opt(
        5e-5, "learning rate of gains (norm weights, 1-d params) and biases, weight decay 0"
    )
    lr_weights: float = _opt(1e-8, "learning rate of every other weight (with --weight-decay)")
    lr_logit_scale: float | None = _opt(
        None, "learning rate of the logit scale, weight decay 0 ('none' = --lr-weights, the release)"
    )
    weight_decay: float = _opt(0.1, "AdamW weight decay of the 'weights' group")
    # the temporal head's own settings (the release's lr_head_gb / lr_head_rest / weight_decay_head)
    lr_head_gain_bias: float | None = _opt(None, "temporal head gains/biases ('none' = --lr-gain-bias)")
    lr_head_weights: float | None = _opt(None, "temporal head weights ('none' = --lr-weights)")
    weight_decay_head: float | None = _opt(None, "temporal head weight decay ('none' = --weight-decay)")
    beta1: float = _opt(0.98, "AdamW beta1")
    beta2: float = _opt(0.9, "AdamW beta2")
    eps: float = _opt(1e-6, "AdamW epsilon")
    warmup_steps: int = _opt(
        10_000, "linear warm-up steps, to the cosine rate of the epoch the warm-up ends in (the release's)"
    )
    warmup_start_factor: float = _opt(1e-5, "warm-up starts at this fraction of the scheduled lr")
    min_lr: float = _opt(1e-10, "end point of the per-epoch cosine decay")
    logit_scale_max: float = _opt(math.log(100.0), "logit scale is clamped to [0, this] after each step")

    # ---- precision and memory --------------------------------------------------------------
    precision: str = _opt(
        "auto",
        f"auto (what the device runs natively: bf16 on Ampere+ GPUs, fp16 on older ones, fp32 on the CPU) "
        f"or one of {', '.join(PRECISIONS)} (autocast; fp16 needs a GPU; amp_fp16/amp_bf16 are old names)",
    )
    grad_checkpointing: bool = _opt(False, "recompute activations of both towers in backward (less memory)")
    lock_image: bool = _opt(False, "freeze the frame encoder's CLIP vision tower")
    lock_text: bool = _opt(False, "freeze the CLIP text tower")
    compile: bool = _opt(False, "torch.compile the model (GPU)")
    fused_adamw: bool = _opt(True, "fused AdamW kernel (CUDA and CPU)")
    nonfinite: str = _opt(
        "stop",
        "a NaN/inf loss: 'stop' the run naming the last good checkpoint, or 'skip' the step (no update, "
        "counted and logged) and go on, as the release's GradScaler does",
    )
    tf32: bool = _opt(True, "TF32 tensor cores for fp32 matmuls and convolutions on CUDA (Ampere and newer)")

    # ---- run -------------------------------------------------------------------------------
    seed: int = _opt(2022, "seed of weights, data order and dropout")
    device: str = _opt("auto", "auto, cpu or cuda")
    dist_timeout_min: int = _opt(
        30, "collective timeout in minutes (DDP); rank 0's evaluator and checkpoint writes must fit in it"
    )
    log_every: int = _opt(10, "TensorBoard / progress-bar interval in steps")
    save_every: int = _opt(1000, "checkpoint every N steps (and at each epoch end); 0 = epoch ends only")
    keep_step_checkpoints: int = _opt(2, "step checkpoints kept (epoch checkpoints are all kept)")
    eval_every: int = _opt(1000, "steps between evaluator calls (0 = none between epoch ends)")
    eval_epoch_end: bool = _opt(False, "also call the evaluator at each epoch end (always with --eval-bold)")
    eval_bold: str | None = _opt(
        None,
        "BoLD root (official layout): fit the linear probe on BoLD train and log val mAP/AUC (and VAD R2) "
        "at each epoch end, as the release's trainer does (add --eval-every 0 for epoch ends only)",
    )
    resume: str | None = _opt(
        None,
        "'latest' (newest checkpoint in --output), 'auto' (newest readable one if any, else start: "
        "for re-queued jobs) or a checkpoint path",
    )
    wandb: bool = _opt(False, "also log to Weights & Biases (must be installed)")
    wandb_project: str = _opt("emotionclip", "Weights & Biases project")

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name))
        if self.precision in _OLD_PRECISIONS:
            new = _OLD_PRECISIONS[self.precision]
            warnings.warn(
                f"precision {self.precision!r} is deprecated; use {new!r}", FutureWarning, stacklevel=3
            )
            self.precision = new
        if self.precision not in ("auto", *PRECISIONS):
            raise ValueError(
                f"precision must be auto or one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        for name in ("batch_size", "epochs", "video_len", "log_every", "dist_timeout_min"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("steps_per_epoch", "max_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {self.crop!r}")
        if self.text_truncation not in ("eot", "release"):
            raise ValueError(f"text_truncation must be eot or release, got {self.text_truncation!r}")
        if self.nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {self.nonfinite!r}")
        if self.data_order not in DATA_ORDERS:
            raise ValueError(f"data_order must be one of {DATA_ORDERS}, got {self.data_order!r}")
        for name in ("workers", "warmup_steps", "save_every", "eval_every", "head_layers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr_gain_bias", "lr_weights", "lr_logit_scale", "lr_head_gain_bias", "lr_head_weights"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("weight_decay", "weight_decay_head", "min_lr", "head_dropout", "min_person_fraction"):
            if (getattr(self, name) or 0) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

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


@functools.cache
def _hints() -> dict[str, Any]:
    return typing.get_type_hints(TrainConfig)


def field_type(name: str) -> type:
    """The scalar type of a config field (``int | None`` -> int)."""
    hint = _hints()[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return hint


def _check_type(name: str, value: Any) -> None:
    """Numbers must be finite numbers (a NaN learning rate would fail steps later) and not bools
    (``head_layers: true`` would silently become 1)."""
    kind = field_type(name)
    if value is None or kind not in (int, float):
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"config key {name!r} must be {kind.__name__}, got {value!r}")
    if kind is int and not isinstance(value, int):
        raise ValueError(f"config key {name!r} must be int, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"config key {name!r} must be a finite number, got {value!r}")


def _coerce(name: str, value: Any) -> Any:
    """YAML gives `1e-8` as a string and users write `null`/`none`; convert to the field's type."""
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        default = {f.name: f.default for f in fields(TrainConfig)}[name]
        optional = "None" in str(_hints()[name])
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
    if isinstance(value, bool):  # YAML `true` is not a number
        raise ValueError(f"config key {name!r} must be {kind.__name__}, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key {name!r} must be {kind.__name__}, got {value!r}") from None
