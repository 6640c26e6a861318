"""``emotionclip analyze`` and ``emotionclip embed``: batches of videos, one failure never stops a batch."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..backends import BACKEND_NAMES
from ..constants import DETECT_EVERY
from ..precision import PRECISIONS
from ..video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .persons import DEFAULT_MIN_SHARE

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="emotions over time for videos: CSV, JSON, plot and HTML report per video",
        description="Score every window of each video zero-shot over emotion names (or with a saved "
        "linear-probe head) and write emotions.csv/.json/.png and an interactive, offline report.html "
        "per video into OUT/<video name>/ (with --per-person also emotions.eaf for ELAN and emotions.vtt), plus OUT/summary.json and the overview OUT/index.html. "
        "OUT must be new, empty or an earlier analyze output. Exit status 1 if any video failed.",
    )
    p.add_argument("videos", nargs="+", type=Path, help="video files or folders (searched recursively)")
    _common(p)
    p.add_argument(
        "--classes",
        nargs="+",
        help="emotion names for zero-shot scores (space or comma separated; "
        "default: the 7 sentiment classes)",
    )
    p.add_argument(
        "--head", type=Path, help="linear-probe head saved by `emotionclip evaluate` instead of zero-shot"
    )
    p.add_argument("--keyframes", type=int, default=12, help="keyframes shown in the HTML report")
    p.add_argument(
        "--no-proxy",
        action="store_true",
        help="write no H.264 copy of videos a browser cannot play (FLV, HEVC...): their report has no player",
    )
    p.add_argument("--out", type=Path, default=Path("emotionclip-analysis"), help="output folder")
    p.set_defaults(func=run_analyze)

    e = subparsers.add_parser(
        "embed",
        help="EmotionCLIP embeddings of videos (one per window) and images",
        description="Write OUT/<name>.npz per input: `features` [N, D] (un-normalised), and for videos "
        "`starts`, `ends`, `has_person`, `padded_frames`, `boxes` (JSON) per window (with --per-person: per "
        "row, plus `window` and `person`: 'all' or the person id). OUT must be new, empty "
        "or an earlier embed output. Exit status 1 if any input failed.",
    )
    e.add_argument("inputs", nargs="+", type=Path, help="video or image files, or folders")
    _common(e)
    e.add_argument("--out", type=Path, default=Path("emotionclip-embeddings"), help="output folder")
    e.set_defaults(func=run_embed)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="EmotionCLIP weights (release .pt, saved model dir, trainer checkpoint)",
    )
    p.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2)")
    p.add_argument("--stride", type=float, default=1.0, help="seconds between window starts (default 1)")
    p.add_argument(
        "--detector", default="default", help="person detector name, or 'none' for no subject boxes"
    )
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help="detect each frame alone, as the release does (default: people are followed through the "
        "video, every box has a track id, a person missed in one detection keeps a box)",
    )
    p.add_argument(
        "--per-person",
        action="store_true",
        help="also score each tracked person alone: one more row per (window, person), the window's clip "
        "encoded with that person's mask only (ids 1..K in order of first appearance; about one more "
        "encoder pass per person)",
    )
    p.add_argument(
        "--min-person-share",
        type=float,
        help=f"with --per-person: a person is scored for a window when seen in at least this share of "
        f"its frames (default {DEFAULT_MIN_SHARE})",
    )
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument(
        "--detect-every",
        type=int,
        default=DETECT_EVERY,
        help=f"detect people on every k-th frame of the window grid; the frames between take its boxes "
        f"(default {DETECT_EVERY}; 1: every frame)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="torch",
        help="what runs the model: torch (default, the release's path), onnxruntime, openvino (CPU), or "
        "auto: the fastest installed one whose features stay within cosine 0.999 of fp32, measured once "
        "per machine and model (torch bf16/fp16 on CUDA)",
    )
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, "int8"),
        help="torch: fp32 (default), bf16 (CPU and GPU), fp16 (GPU); onnxruntime: fp32, int8; "
        "openvino: fp32, bf16, int8; auto: limits its choice to this precision",
    )
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")
    p.add_argument(
        "--part",
        help="I/N: only slice I (0-based) of N round-robin slices of the inputs, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (combined with torchrun/srun ranks); the last "
        "part to finish writes summary.json",
    )


def _check_args(args) -> str | None:
    """A problem with the command line as a whole (before any input is touched), or None."""
    if not (args.window > 0 and args.stride > 0):
        return f"--window and --stride must be positive seconds (got {args.window}, {args.stride})"
    if args.batch_size < 1:
        return f"--batch-size must be >= 1 (got {args.batch_size})"
    if args.detect_every < 1:
        return f"--detect-every must be >= 1 (got {args.detect_every})"
    if args.min_person_share is not None and not args.per_person:
        return "--min-person-share needs --per-person"
    if args.min_person_share is not None and not 0 < args.min_person_share <= 1:
        return f"--min-person-share must be in (0, 1] (got {args.min_person_share})"
    if args.per_person and not args.track:
        return "--per-person needs tracking (drop --no-track): persons are told apart by their track ids"
    from ..heads import check_head_or_classes

    try:
        check_head_or_classes(getattr(args, "head", None), getattr(args, "classes", None))
    except ValueError as e:
        return str(e)
    if getattr(args, "head", None) is not None:  # before the model loads: a broken head costs nothing
        from .analyze import probe_scorer

        try:
            probe_scorer(args.head)
        except (OSError, ValueError) as e:
            return f"--head {e}"
    if args.backend == "torch" and args.precision is not None:  # as --device: up front, not per video
        from ..precision import autocast

        try:
            autocast(args.device, args.precision)
        except (ValueError, RuntimeError) as e:
            return f"--precision {args.precision}: {e}"
    if args.part is not None:
        from ..jobs import parse_part

        try:
            parse_part(args.part)
        except ValueError as e:
            return str(e)
    if args.out.exists() and not args.out.is_dir():
        return f"--out {args.out}: is a file, not a folder; choose a folder for the outputs"
    return None


def _classes(args) -> list[str] | None:
    """``--classes`` as a list (space or comma separated); ValueError when given but unusable."""
    if args.classes is None:
        return None
    from .analyze import check_classes

    classes = [c.strip() for item in args.classes for c in item.split(",") if c.strip()]
    try:
        check_classes(classes)
    except ValueError as e:
        raise ValueError(f"--classes: {e}") from None
    return classes


def _load(args):
    """The runner, built once here, or None after logging why the checkpoint cannot be used."""
    from ..jobs import error_text
    from ..runner import load_runner

    # torch runs fp32 unless asked (the release's path); a backend's own default otherwise
    precision = args.precision or ("fp32" if args.backend == "torch" else None)
    try:
        runner = load_runner(args.checkpoint, args.device, precision, args.backend)
    except (OSError, ValueError, RuntimeError, ImportError) as e:
        logger.error("cannot load the model: %s", error_text(Path(args.checkpoint), e))
        return None
    logger.info(
        "loaded %s (video_len %d, embed_dim %d, backend %s)",
        args.checkpoint,
        runner.video_len,
        runner.embed_dim,
        runner.backend,
    )
    return runner


def _embed_settings(args):
    from ..detect import resolve_detector
    from .embed import EmbedSettings
    from .persons import PerPerson

    share = DEFAULT_MIN_SHARE if args.min_person_share is None else args.min_person_share
    return EmbedSettings(
        per_person=PerPerson(min_share=share) if args.per_person else False,
        window=args.window,
        stride=args.stride,
        detector=resolve_detector(args.detector, device=args.device),  # on the GPU with the model
        batch_size=args.batch_size,
        detect_every=args.detect_every,
        track=args.track,
    )


def _setup(args, paths, extensions, what: str):
    """Checks shared by analyze and embed -> ``(inputs, runner, embed settings)``, or None (logged)."""
    problem = _check_args(args)
    if problem:
        logger.error(problem)
        return None
    from ..jobs import rank_device
    from .batch import expand_inputs

    args.device = rank_device(args.device)  # under torchrun / srun: one GPU per process

    inputs = expand_inputs(paths, extensions)
    if not inputs:
        logger.error("no %s found in %s", what, ", ".join(map(str, paths)))
        return None
    runner = _load(args)
    if runner is None:
        return None
    try:
        return inputs, runner, _embed_settings(args)
    except (ValueError, OSError, ImportError) as e:
        logger.error("--detector %s: %s", args.detector, e)
        return None


def run_analyze(args) -> int:
    from .._io import OutputDirError
    from .batch import analyze_paths

    try:
        classes = _classes(args)
    except ValueError as e:
        logger.error("%s", e)
        return 2
    setup = _setup(args, args.videos, VIDEO_EXTENSIONS, "videos")
    if setup is None:
        return 2
    videos, runner, embedding = setup
    try:
        summary = analyze_paths(
            runner,
            videos,
            args.out,
            classes=classes,
            head=args.head,
            keyframes=args.keyframes,
            overwrite=args.overwrite,
            settings={"checkpoint": str(args.checkpoint)},
            proxy=not args.no_proxy,
            part=args.part,
            embedding=embedding,
        )
    except (OutputDirError, ValueError) as e:  # the folder, or the classes a head brings
        logger.error("%s", e)
        return 2
    return 1 if summary["failed"] else 0


def run_embed(args) -> int:
    from .._io import OutputDirError
    from .batch import embed_paths

    setup = _setup(args, args.inputs, VIDEO_EXTENSIONS + IMAGE_EXTENSIONS, "videos or images")
    if setup is None:
        return 2
    inputs, runner, embedding = setup
    try:
        summary = embed_paths(
            runner,
            inputs,
            args.out,
            overwrite=args.overwrite,
            settings={"checkpoint": str(args.checkpoint)},
            part=args.part,
            embedding=embedding,
        )
    except OutputDirError as e:
        logger.error("%s", e)
        return 2
    return 1 if summary["failed"] else 0
