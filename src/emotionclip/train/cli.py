"""``emotionclip train``: one flag per `TrainConfig` key, plus ``--config file.yaml``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields

from .config import PRECISIONS, TrainConfig, field_type

logger = logging.getLogger(__name__)

_HELP = {
    "data": "WebDataset shard URL(s), brace notation, several joined with '::' "
    "(e.g. 'corpus/shard-{000000..000099}.tar')",
    "output": "run folder (config, checkpoints, TensorBoard events, loss curve)",
    "batch_size": "clips per process and step",
    "pretrained": "open_clip tag or local CLIP weights file; 'none' = random init",
    "init": "fine-tune this EmotionCLIP checkpoint (release format or ours; architecture from the file)",
    "head_dropout": "dropout of the temporal transformer",
    "reset_logit_scale": "start the temperature at 1/0.07 instead of the initial weights' (the release's option)",
    "min_person_fraction": "skip clips with a person in fewer than this fraction of frames (0 keeps all)",
    "crop": "random crop per 'frame' (the release) or one per 'clip'",
    "data_order": "'uniform': shuffle over every clip (the release); 'stream': shard order + buffer",
    "lr_head_gain_bias": "temporal head gains/biases ('none' = --lr-gain-bias)",
    "lr_head_weights": "temporal head weights ('none' = --lr-weights)",
    "weight_decay_head": "temporal head weight decay ('none' = --weight-decay)",
    "precision": f"one of {', '.join(PRECISIONS)}",
    "resume": "'latest' (newest checkpoint in --output), 'auto' (latest if there is one, else start: "
    "for re-queued jobs) or a checkpoint path",
    "steps_per_epoch": "steps that make an epoch ('none' = one pass over the shards)",
    "max_steps": "stop after this many steps in total",
    "save_every": "checkpoint every N steps (and at each epoch end); 0 = epoch ends only",
    "lock_image": "freeze the CLIP vision tower",
    "lock_text": "freeze the CLIP text tower",
    "wandb": "also log to Weights & Biases (must be installed)",
    "video_len": "frames per clip",
    "workers": "data-loader worker processes per training process",
    "neutral_threshold": "skip clips whose neutral sentiment probability is above this",
    "backbone": "open_clip model name, a backbone shipped with emotionclip ('tiny') or a JSON config",
    "temporal_fusion": "transformer, mean or conv1d",
    "head_layers": "temporal transformer layers",
    "sentiment_scale": "alpha of the sentiment-guided loss (0 = plain CLIP loss)",
    "local_loss": "each rank's rows against all columns (less memory across GPUs)",
    "gather_with_grad": "back-propagate through the cross-rank feature gather (exact gradients)",
    "lr_gain_bias": "learning rate of gains and biases (weight decay 0)",
    "lr_weights": "learning rate of all other weights",
    "lr_logit_scale": "learning rate of the logit scale, weight decay 0 ('none' = --lr-weights)",
    "weight_decay": "AdamW weight decay of the 'weights' group",
    "warmup_steps": "linear warm-up steps, to the cosine rate of the epoch the warm-up ends in",
    "warmup_start_factor": "warm-up starts at lr times this",
    "min_lr": "end of the per-epoch cosine decay",
    "logit_scale_max": "logit scale is clamped to [0, this] after each step",
    "grad_checkpointing": "recompute activations of both towers in backward (less memory)",
    "compile": "torch.compile the model",
    "fused_adamw": "fused AdamW kernel on CUDA",
    "device": "auto, cpu or cuda",
    "dist_timeout_min": "collective timeout in minutes (DDP)",
    "log_every": "TensorBoard / progress-bar interval in steps",
    "keep_step_checkpoints": "step checkpoints kept (epoch checkpoints are all kept)",
    "eval_every": "steps between evaluator calls (Python API evaluator)",
}


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="pre-train EmotionCLIP on WebDataset shards (one CPU/GPU, or many via torchrun/SLURM)",
        description="Train EmotionCLIP. Defaults are the published recipe; every key can be set in a YAML "
        "file (--config) and overridden by flags. Multi-GPU: torchrun --nproc-per-node G -m emotionclip train ...",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", metavar="YAML", help="YAML file of config keys (flags override it)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        help_text = _HELP.get(f.name, f.name.replace("_", " "))
        if field_type(f.name) is bool:
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=f"{help_text} (default: {default})",
            )
        else:
            parser.add_argument(
                flag,
                dest=f.name,
                default=argparse.SUPPRESS,
                metavar=f.name.upper(),
                help=f"{help_text} (default: {default})",
            )
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """Defaults < YAML < flags; values arrive as strings and are converted per field."""
    overrides = {k: getattr(args, k) for k in TrainConfig.valid_keys() if hasattr(args, k)}
    if getattr(args, "config", None):
        return TrainConfig.from_yaml(args.config, overrides)
    return TrainConfig.from_dict(overrides)


def run(args: argparse.Namespace) -> int:
    from .loop import train

    try:
        config = config_from_args(args)
        result = train(config)
    except (ValueError, OSError) as e:  # bad input: a message, not a traceback
        logger.error("%s", e)
        return 2
    if result.losses:
        print(
            f"trained to step {result.steps[-1]}: loss {result.losses[-1]:.4f}; "
            f"checkpoint {result.checkpoint}; run folder {result.run_dir}"
        )
    return 0
