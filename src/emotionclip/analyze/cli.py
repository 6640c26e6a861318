"""``emotionclip analyze`` and ``emotionclip embed``: batches of videos, one failure never stops a batch."""

from __future__ import annotations

import argparse
import io
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .demo import DemoConfig
from .embed import PRECISIONS

logger = logging.getLogger(__name__)



def register(subparsers) -> None:
    p = subparsers.add_parser(
        "analyze",
        help="emotions over time for videos: CSV, JSON, plot and HTML report per video",
        description="Score every window of each video zero-shot over emotion names (or with a saved "
        "linear-probe head) and write emotions.csv/.json/.png and report.html per video into "
        "OUT/<video name>/, plus OUT/summary.json. Exit status 1 if any video failed.",
    )
    p.add_argument("videos", nargs="+", type=Path, help="video files or folders (searched recursively)")
    _common(p)
    p.add_argument("--classes", nargs="+", help="emotion names for zero-shot scores (space or comma separated; "
                   "default: the 7 sentiment classes)")
    p.add_argument("--head", type=Path, help="linear-probe head saved by `emotionclip evaluate` instead of zero-shot")
    p.add_argument("--keyframes", type=int, default=12, help="keyframes shown in the HTML report")
    p.add_argument("--out", type=Path, default=Path("emotionclip-analysis"), help="output folder")
    p.set_defaults(func=run_analyze)

    e = subparsers.add_parser(
        "embed",
        help="EmotionCLIP embeddings of videos (one per window) and images",
        description="Write OUT/<name>.npz per input: `features` [N, D] (un-normalised), and for videos "
        "`starts`, `ends`, `has_person`, `boxes` (JSON) per window. Exit status 1 if any input failed.",
    )
    e.add_argument("inputs", nargs="+", type=Path, help="video or image files, or folders")
    _common(e)
    e.add_argument("--out", type=Path, default=Path("emotionclip-embeddings"), help="output folder")
    e.set_defaults(func=run_embed)

    d = subparsers.add_parser(
        "demo",
        help="the whole pipeline on the bundled sample clips (offline, a few CPU minutes)",
        description="Prepare a corpus from the bundled sample clips, train a TINY EmotionCLIP on the CPU "
        "(not a trained model: the scores mean nothing), analyse the samples and write HTML reports. "
        "With --checkpoint, analyse the samples with those weights instead.",
    )
    d.add_argument("--out", type=Path, default=Path("emotionclip-demo"), help="output folder")
    d.add_argument("--checkpoint", help="real EmotionCLIP weights: skip preparing and training")
    d.add_argument("--train-steps", type=int, default=DemoConfig.train_steps, help="training steps of the tiny model")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=run_demo)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="EmotionCLIP weights (release .pt, saved model dir, trainer checkpoint)")
    p.add_argument("--window", type=float, default=2.0, help="window length in seconds (default 2)")
    p.add_argument("--stride", type=float, default=1.0, help="seconds between window starts (default 1)")
    p.add_argument("--detector", default="default", help="person detector name, or 'none' for no subject boxes")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="bf16 works on CPU and GPU, fp16 on GPU")
    p.add_argument("--overwrite", action="store_true", help="redo inputs whose outputs already exist")


def expand_inputs(paths: list[Path], extensions: tuple[str, ...]) -> list[Path]:
    """Files as given (any extension); folders -> their files with ``extensions``, sorted, recursively."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(f for f in path.rglob("*") if f.is_file() and f.suffix.lower() in extensions)
            if not inside:
                logger.warning("%s: folder holds no %s files", path, "/".join(sorted(extensions)))
            found.extend(inside)
        else:
            found.append(path)  # a missing file fails on its own, with its name, during the batch
    return list(dict.fromkeys(found))


def _error_text(path: Path, error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


def _output_dir(out: Path, source: Path, taken: set[Path], owner) -> Path:
    """``OUT/<stem>``, or ``OUT/<stem>-2``... when that name went to another input of this batch or
    holds the results of another file (``owner(candidate)``: the input whose outputs are there, or None)."""
    def foreign(folder: Path) -> bool:
        other = owner(folder)
        return other is not None and Path(other).resolve() != source.resolve()

    candidate, n = out / source.stem, 1
    while candidate in taken or foreign(candidate):
        n += 1
        candidate = out / f"{source.stem}-{n}"
    taken.add(candidate)
    return candidate


def _analysis_owner(folder: Path) -> str | None:
    try:
        return json.loads((folder / "emotions.json").read_text())["video"]
    except (OSError, ValueError, KeyError):
        return None


def _embedding_owner(stem_path: Path) -> str | None:
    try:
        with np.load(stem_path.with_suffix(".npz")) as f:
            return str(f["source"])
    except (OSError, ValueError, KeyError):
        return None


def _check_args(args) -> str | None:
    """A problem with the command line as a whole (before any input is touched), or None."""
    if not (args.window > 0 and args.stride > 0):
        return f"--window and --stride must be positive seconds (got {args.window}, {args.stride})"
    if args.batch_size < 1:
        return f"--batch-size must be >= 1 (got {args.batch_size})"
    if getattr(args, "head", None) is not None and getattr(args, "classes", None):
        return "give either --classes (zero-shot) or --head (linear probe), not both"
    return None


def _load(args):
    """The model, or None after logging why the checkpoint cannot be used."""
    import emotionclip

    try:
        model = emotionclip.load_model(args.checkpoint, device=args.device)
    except (OSError, ValueError, RuntimeError) as e:
        logger.error("cannot load the model: %s", _error_text(Path(args.checkpoint), e))
        return None
    logger.info("loaded %s (video_len %d, embed_dim %d)", args.checkpoint, model.video_len, model.embed_dim)
    return model


def _embed_kwargs(args) -> dict:
    from .embed import resolve_detector

    return dict(
        window=args.window,
        stride=args.stride,
        detector=resolve_detector(args.detector),
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )


def _write_summary(out: Path, summary: dict) -> None:
    from .._io import atomic_write

    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    failed = summary["failed"]
    logger.info(
        "%d done, %d skipped (outputs exist), %d failed; summary: %s",
        len(summary["done"]), len(summary["skipped"]), len(failed), out / "summary.json",
    )
    for item in failed:
        logger.error("failed: %s", item["error"])


def analyze_paths(model, videos: list[Path], out: Path, classes=None, head=None, keyframes=12,
                  overwrite=False, note=None, settings: dict | None = None, **embed_kwargs) -> dict:
    """Analyse each video into ``out/<stem>/``; a failing video is logged and listed, the rest go on."""
    from .analyze import probe_scorer, run_analysis, zero_shot_scorer
    from .report import OUTPUT_NAMES, write_report

    if head is not None and classes:
        raise ValueError("give either --classes (zero-shot) or --head (linear probe), not both")
    scorer = (
        probe_scorer(head) if head is not None
        else zero_shot_scorer(model, classes, device=embed_kwargs.get("device", "cpu"))
    )
    detector = embed_kwargs.get("detector")
    settings = {
        **(settings or {}),
        "window": embed_kwargs.get("window"),
        "stride": embed_kwargs.get("stride"),
        "video_len": model.video_len,
        "detector": getattr(detector, "name", detector),
        "precision": embed_kwargs.get("precision", "fp32"),
        "method": scorer.method,
        "classes": list(scorer.classes),
    }
    summary = {"settings": settings, "done": [], "skipped": [], "failed": []}
    taken: set[Path] = set()
    for video in tqdm(videos, desc="videos", unit="video"):
        target = _output_dir(out, video, taken, _analysis_owner)
        if not overwrite and all((target / name).exists() for name in OUTPUT_NAMES.values()):
            logger.info("%s: outputs already in %s, skipped (--overwrite to redo)", video, target)
            summary["skipped"].append({"video": str(video), "out": str(target)})
            continue
        try:
            analysis = run_analysis(model, video, scorer, keyframes=keyframes, progress=True, **embed_kwargs)
            paths = write_report(analysis, target, note=note, **settings)
        except Exception as e:  # one bad video never stops the batch
            logger.error("%s", _error_text(video, e), exc_info=logger.isEnabledFor(logging.DEBUG))
            summary["failed"].append({"video": str(video), "error": _error_text(video, e)})
            continue
        logger.info("%s: %d windows -> %s", video, len(analysis.table), paths["html"])
        summary["done"].append({"video": str(video), "windows": len(analysis.table),
                                **{kind: str(p) for kind, p in paths.items()}})
    _write_summary(out, summary)
    return summary


def _setup(args, paths, extensions, what: str):
    """Checks shared by analyze and embed -> ``(inputs, model, embed kwargs)``, or None (logged)."""
    problem = _check_args(args)
    if problem:
        logger.error(problem)
        return None
    inputs = expand_inputs(paths, extensions)
    if not inputs:
        logger.error("no %s found in %s", what, ", ".join(map(str, paths)))
        return None
    model = _load(args)
    if model is None:
        return None
    try:
        return inputs, model, _embed_kwargs(args)
    except (ValueError, OSError, ImportError) as e:
        logger.error("--detector %s: %s", args.detector, e)
        return None


def run_analyze(args) -> int:
    classes = [c.strip() for item in args.classes for c in item.split(",") if c.strip()] if args.classes else None
    setup = _setup(args, args.videos, VIDEO_EXTENSIONS, "videos")
    if setup is None:
        return 2
    videos, model, embed_kwargs = setup
    summary = analyze_paths(
        model, videos, args.out, classes=classes, head=args.head, keyframes=args.keyframes,
        overwrite=args.overwrite, settings={"checkpoint": str(args.checkpoint)}, **embed_kwargs,
    )
    return 1 if summary["failed"] else 0


def run_embed(args) -> int:
    from .._io import atomic_write
    from .analyze import rounded_boxes
    from .embed import embed_image, embed_video

    setup = _setup(args, args.inputs, VIDEO_EXTENSIONS + IMAGE_EXTENSIONS, "videos or images")
    if setup is None:
        return 2
    inputs, model, kwargs = setup
    summary = {"settings": {"checkpoint": str(args.checkpoint), "window": args.window, "stride": args.stride},
               "done": [], "skipped": [], "failed": []}
    taken: set[Path] = set()
    for path in tqdm(inputs, desc="inputs", unit="file"):
        target = _output_dir(args.out, path, taken, _embedding_owner).with_suffix(".npz")
        if target.exists() and not args.overwrite:
            summary["skipped"].append({"input": str(path), "out": str(target)})
            continue
        try:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                features = embed_image(model, path, detector=kwargs["detector"], device=args.device,
                                       precision=args.precision)
                arrays = {"source": np.array(str(path)), "features": features[None].numpy()}
            else:
                e = embed_video(model, path, keyframes=0, progress=True, **kwargs)
                arrays = {
                    "source": np.array(str(path)), "features": e.features.numpy(), "starts": e.starts, "ends": e.ends,
                    "has_person": e.has_person,
                    "boxes": np.array(json.dumps([[rounded_boxes(b) for b in w] for w in e.boxes])),
                }
        except Exception as e:  # one bad input never stops the batch
            logger.error("%s", _error_text(path, e))
            summary["failed"].append({"input": str(path), "error": _error_text(path, e)})
            continue
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(target, buf.getvalue())
        summary["done"].append({"input": str(path), "out": str(target), "rows": len(arrays["features"])})
    _write_summary(args.out, summary)
    return 1 if summary["failed"] else 0


def run_demo(args) -> int:
    from . import demo

    return demo.run_demo(demo.DemoConfig(out=args.out, checkpoint=args.checkpoint, train_steps=args.train_steps, device=args.device))
