"""`emotionclip` command line: a thin layer over the Python API.

Each stage package contributes its sub-commands through a ``register(subparsers)`` function in
its own ``cli`` module; this file only wires them together.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# stage package -> module that defines register(subparsers)
_STAGE_CLIS = (
    "emotionclip.prepare.cli",
    "emotionclip.train.cli",
    "emotionclip.evaluate.cli",
    "emotionclip.analyze.cli",
    "emotionclip.export_cli",  # core: checkpoint -> ONNX / OpenVINO graphs for the inference backends
    "emotionclip.demo",  # above the stages: runs prepare, train and analyze in turn
)


def build_parser() -> argparse.ArgumentParser:
    from emotionclip import __version__

    parser = argparse.ArgumentParser(
        prog="emotionclip",
        description="EmotionCLIP: emotion representations from videos of people and what they say.",
    )
    parser.add_argument("--version", action="version", version=f"emotionclip {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in _STAGE_CLIS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name and module_name.startswith(e.name):
                continue  # stage not installed in this build
            raise
        module.register(sub)
    if "train" in sub.choices:
        sub.choices["train"].set_defaults(make_evaluator=_bold_evaluator)
    return parser


def _bold_evaluator(config):
    """`train --eval-bold ROOT`: the release's per-epoch BoLD probe, built here because the train
    stage never imports the evaluate stage."""
    from emotionclip.evaluate import make_probe_evaluator

    return make_probe_evaluator("bold", config.eval_bold, num_workers=min(2, config.workers))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        logging.getLogger("emotionclip").error("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
