"""``emotionclip evaluate`` (linear probes on a benchmark) and ``emotionclip zero-shot``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .._io import FileError, atomic_write
from ..backends import BACKEND_NAMES
from ..precision import PRECISIONS
from .benchmarks import BENCHMARKS

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="linear-probe a checkpoint on a benchmark (BoLD, MovieGraphs, MELD, Emotic, LIRIS-ACCEDE)",
        description="Extract frozen features (cached), fit the paper's linear probe on the training split "
        "and write OUT/<dataset>_metrics.json, a Markdown table, plots and the probe heads.",
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="EmotionCLIP checkpoint (release .pt or saved dir)"
    )
    p.add_argument("--dataset", required=True, choices=list(BENCHMARKS))
    p.add_argument("--root", required=True, type=Path, help="the dataset's official download folder")
    p.add_argument(
        "--out", type=Path, default=Path("eval_results"), help="output folder (default: eval_results)"
    )
    p.add_argument("--cache-dir", type=Path, help="feature cache (default: OUT/feature_cache)")
    p.add_argument(
        "--solver",
        choices=["torch", "sklearn"],
        default="torch",
        help="probe solver: fast full-batch L-BFGS (torch) or the release's scikit-learn reference",
    )
    p.add_argument(
        "--compare-sklearn", action="store_true", help="also fit the scikit-learn probe and report both"
    )
    p.add_argument(
        "--macro",
        choices=["defined", "release"],
        default="defined",
        help="macro mAP over the classes with positives and negatives in the split (defined), or over "
        "every class with AP 0 for one absent from the split, as the release's scikit-learn numbers",
    )
    p.add_argument(
        "--detector",
        default="default",
        help="person detector for benchmarks without boxes (MELD, MovieGraphs, LIRIS-ACCEDE): "
        "'default', 'torchvision[:ARCH]', 'json:PATH', 'release-boxes:PATH[,fps=R][,unpad]' (the "
        "release's own YOLOv7 box files, mapped as it maps them) or 'none'",
    )
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help="detect each frame alone, as the release does (default: people are followed through a "
        "sample's frames, a person missed in one frame between two detections keeps a box)",
    )
    p.add_argument("--device", help="cuda / cpu (default: cuda when available)")
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, "int8"),
        help="feature extraction precision (default: bf16 on GPUs of compute capability >= 8, fp16 on "
        "older GPUs, fp32 on the CPU; int8 with --backend onnxruntime/openvino); part of the "
        "feature-cache key",
    )
    _backend_flag(p)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--workers", type=int, default=2, help="decoding threads")
    p.add_argument(
        "--frames", type=int, help="frames per clip (default: the model's video_len, 8 for the release)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT/<dataset>_metrics.json")
    p.add_argument(
        "--part",
        help="I/N: extract features for slice I (0-based) of N round-robin slices of every split, e.g. "
        "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT (combined with torchrun/srun ranks); the part that "
        "completes the set fits the probes and writes the metrics",
    )
    p.set_defaults(func=run_evaluate)

    z = subparsers.add_parser(
        "zero-shot",
        help="score videos/images against emotion names with prompts (no training)",
        description="Class names x prompt templates -> averaged text embeddings -> probabilities per input.",
    )
    z.add_argument("inputs", nargs="+", type=Path, help="video or image files")
    z.add_argument("--checkpoint", required=True, type=Path)
    z.add_argument("--classes", help="comma-separated class names (default: the 7 basic emotions)")
    z.add_argument(
        "--vocabulary", choices=["basic", "emotic"], help="a built-in class list instead of --classes"
    )
    z.add_argument("--templates-file", type=Path, help="text file, one prompt template with {} per line")
    z.add_argument(
        "--detector", default="none", help="subject boxes: 'none' (default), 'default', 'json:PATH', ..."
    )
    z.add_argument("--device")
    z.add_argument(
        "--precision",
        choices=(*PRECISIONS, "int8"),
        help="default: the device's (fp32 on the CPU); int8 for the runtimes",
    )
    _backend_flag(z)
    z.add_argument("--output", type=Path, help="write the results JSON here (default: print it)")
    z.set_defaults(func=run_zero_shot)


def _backend_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=BACKEND_NAMES,
        default="torch",
        help="what runs the model (default torch, the release's path; onnxruntime / openvino on the CPU; "
        "auto: the fastest within cosine 0.999 of fp32, measured once per machine); keys the cache",
    )


def run_evaluate(args: argparse.Namespace) -> int:
    from .run import evaluate

    try:
        result = evaluate(
            args.checkpoint,
            args.dataset,
            args.root,
            out_dir=args.out,
            cache_dir=args.cache_dir,
            solver=args.solver,
            compare_sklearn=args.compare_sklearn,
            detector=args.detector,
            track=args.track,
            device=args.device,
            precision=args.precision,
            batch_size=args.batch_size,
            num_workers=args.workers,
            num_frames=args.frames,
            overwrite=args.overwrite,
            backend=args.backend,
            part=args.part,
            macro=args.macro,
        )
    except (
        FileError,
        FileNotFoundError,
        FileExistsError,
        ValueError,
    ) as e:  # bad input: one line, no traceback
        logger.error("%s", e)
        return 2
    if "pending" in result:  # a part that left the probes to another (its log line says which)
        return 0
    print((args.out / f"{args.dataset}_metrics.md").read_text())
    return 0 if any(result["metrics"].values()) else 1


def run_zero_shot(args: argparse.Namespace) -> int:
    from .zeroshot import VOCABULARIES, zero_shot

    if args.classes and args.vocabulary:
        raise SystemExit("give --classes or --vocabulary, not both")
    from ..heads import check_class_names

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes is not None else None
    if classes is None and args.vocabulary:
        classes = list(VOCABULARIES[args.vocabulary])
    if classes is not None:
        try:
            check_class_names(classes)
        except ValueError as e:
            print(f"--classes: {e}", file=sys.stderr)
            return 2
    if args.output and args.output.exists():  # before any work, not after scoring every input
        print(f"{args.output}: already exists; choose another --output", file=sys.stderr)
        return 2
    templates = None
    if args.templates_file:
        try:
            templates = [t.strip() for t in args.templates_file.read_text().splitlines() if t.strip()]
        except (OSError, UnicodeDecodeError) as e:
            print(f"{args.templates_file}: cannot read the templates ({e})", file=sys.stderr)
            return 2
        bad = [t for t in templates if "{}" not in t]
        if not templates or bad:
            print(
                f"{args.templates_file}: every template needs a '{{}}' for the class name; bad: "
                f"{bad or 'no templates'}",
                file=sys.stderr,
            )
            return 2
    result = zero_shot(
        args.checkpoint,
        args.inputs,
        classes,
        templates,
        detector=args.detector,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
    )
    text = json.dumps(result, indent=2)
    if args.output:
        if args.output.exists():
            raise SystemExit(f"{args.output}: already exists; choose another --output")
        atomic_write(args.output, text)
    for r in result["results"]:
        best = max(r["scores"].values())
        print(f"{r['path']}: {r['top'] or 'no dominant emotion'} ({best:.2f})")
    for f in result["failed"]:
        print(f"FAILED {f['reason']}")
    if not args.output:
        print(text)
    return 1 if result["failed"] else 0
