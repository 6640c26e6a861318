"""``emotionclip train``: one flag per `TrainConfig` key (help from the field's metadata), plus
``--config file.yaml``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import MISSING, fields

from .config import TrainConfig, field_type

logger = logging.getLogger(__name__)


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
        help_text = f.metadata.get("help", f.name.replace("_", " "))  # tests require every field to have one
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


EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped by SIGTERM/SIGUSR1 after a checkpoint; rerun with --resume auto


def run(args: argparse.Namespace) -> int:
    from .._io import FileError
    from .distributed import RankFailure
    from .loop import train

    try:
        config = config_from_args(args)
        evaluator = None
        if config.eval_bold:
            # the evaluate stage is not imported here (stages are independent): the emotionclip
            # command sets make_evaluator on the parsed arguments
            make_evaluator = getattr(args, "make_evaluator", None)
            if make_evaluator is None:
                raise ValueError("--eval-bold needs the evaluate stage, which this command was built without")
            evaluator = make_evaluator(config)
        result = train(config, evaluator=evaluator)
    except (ValueError, OSError, FileError, FloatingPointError, RankFailure) as e:
        logger.error("%s", e)  # bad input, a diverged run, another rank's failure: a message, not a traceback
        return 2
    if result.stopped_by:
        print(
            f"stopped by {result.stopped_by} at step {result.steps[-1] if result.steps else 0}; checkpoint "
            f"{result.checkpoint}; continue with --resume latest (or auto)"
        )
        return EXIT_STOPPED
    if result.losses:
        print(
            f"trained to step {result.steps[-1]}: loss {result.losses[-1]:.4f}; "
            f"checkpoint {result.checkpoint}; run folder {result.run_dir}"
        )
    return 0
