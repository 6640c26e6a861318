"""`emotionclip demo`: the whole pipeline on the bundled sample clips, offline, in about 4.5 CPU minutes.

prepare (subtitles/transcripts -> clips -> shards) -> train a TINY EmotionCLIP from scratch ->
analyse every sample video -> HTML reports + an index page. With ``--checkpoint`` the first two
steps are skipped and the given (e.g. released) weights analyse the samples instead.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from .constants import SAMPLE_MEDIA

logger = logging.getLogger(__name__)

TINY_WARNING = (
    "This report comes from a TINY demo model trained from scratch for {steps} steps on {clips} sample clips. "
    "It is NOT a trained EmotionCLIP and its emotion scores mean nothing; the demo only shows the "
    "pipeline working end to end. Use `emotionclip analyze --checkpoint <released weights>` for real scores."
)
# what the tiny model did learn: to pair its few training clips with their own sentences (the
# contrastive loss), not emotion words, so its scores over emotion names are flat
TINY_LEARNED = (
    " What it learned: to pair each of its clips with its own sentence (contrastive loss {first:.3f} at "
    "the first logged step, {last:.3f} at the last); emotion names it never saw, so windows whose scores "
    "are too close to call say 'no dominant emotion'."
)


# measured: `time emotionclip demo` (300 steps) took 4 min 32 s of CPU time (user) on a 2-core AMD
# EPYC (7.5 min of wall time, the cores shared with other jobs); the README says the same
DEMO_TIME = "about 4.5 CPU minutes"
MODEL_DIR = "model"  # the trained tiny model, saved by save_model inside the demo folder


@dataclass
class DemoConfig:
    out: Path = Path("emotionclip-demo")
    checkpoint: str | None = None  # real weights: skip prepare + train
    train_steps: int = 300
    batch_size: int = 8
    video_len: int = 4
    device: str = "cpu"
    window: float = 1.0  # the CREMA-D clips are 2 s long: short windows give them a curve
    stride: float = 0.5


def sample_videos() -> list[Path]:
    return [
        SAMPLE_MEDIA / "friday.mp4",
        SAMPLE_MEDIA / "flower.mp4",
        *sorted((SAMPLE_MEDIA / "cremad").glob("*.flv")),
    ]


def write_corpus_manifest(path: Path) -> Path:
    """The prepare manifest: friday with its WebVTT subtitles, each CREMA-D clip with its sentence.

    flower.mp4 has no words, so it is analysed but not trained on."""
    rows = [
        {"video": str(SAMPLE_MEDIA / "friday.mp4"), "subtitle": str(SAMPLE_MEDIA / "friday.vtt"), "text": ""}
    ]
    with open(SAMPLE_MEDIA / "cremad" / "transcript.csv", newline="") as f:
        for row in csv.DictReader(f):
            video = SAMPLE_MEDIA / "cremad" / f"{row['name']}.flv"
            if video.is_file():  # the transcript also lists clips of actors not bundled here
                rows.append({"video": str(video), "subtitle": "", "text": row["transcript"]})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["video", "subtitle", "text"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def prepare_corpus(cfg: DemoConfig) -> tuple[Path, int]:
    from .prepare.clips import ClipFilter
    from .prepare.pipeline import PrepareConfig, prepare

    manifest = write_corpus_manifest(cfg.out / "corpus_manifest.csv")
    # the sample lines are short and mostly neutral: keep every sentence of 1 s or more
    rules = ClipFilter(min_duration=0.9, min_frames=cfg.video_len, max_neutral=None, min_person_fraction=0.0)
    corpus = cfg.out / "corpus"
    summary = prepare(manifest, corpus, PrepareConfig(filter=rules))
    if not summary["corpus_clips"]:
        raise RuntimeError(f"{corpus}: preparing the sample media gave no clips ({summary['failures']})")
    return corpus, int(summary["corpus_clips"])


def train_tiny(cfg: DemoConfig, corpus: Path):
    """Train (or continue) the tiny model -> ``TrainResult`` (its ``checkpoint`` and losses)."""
    from .train.checkpoint import CheckpointDir
    from .train.config import TrainConfig
    from .train.loop import train

    run = cfg.out / "train"
    done = CheckpointDir(run).latest()  # a rerun of the demo continues (or reuses) its training run
    config = TrainConfig(
        data=str(corpus),
        output=str(run),
        backbone="tiny",
        pretrained=None,
        head_layers=1,
        video_len=cfg.video_len,
        batch_size=cfg.batch_size,
        workers=0,
        epochs=1,
        steps_per_epoch=cfg.train_steps,
        keep_step_checkpoints=1,
        neutral_threshold=1.0,
        # from scratch, so learning rates far above the release's fine-tuning ones
        lr_gain_bias=1e-3,
        lr_weights=1e-3,
        lr_logit_scale=1e-3,
        warmup_steps=10,
        precision="fp32",
        device=cfg.device,
        save_every=0,
        log_every=10,
        seed=0,
        resume="latest" if done is not None else None,
    )
    result = train(config)
    if result.checkpoint is None:
        raise RuntimeError(f"{run}: training wrote no checkpoint")
    return result


def run_demo(cfg: DemoConfig) -> int:
    """The demo into ``cfg.out``, claimed as analyze claims its folder (new, empty or an earlier demo's;
    a file or a folder of the user's is refused with ``OutputDirError`` before any work)."""
    from ._io import OUTPUT_MARKER, atomic_write_json, claim_output_dir

    if not cfg.checkpoint and cfg.train_steps < 1:
        raise ValueError(f"--train-steps must be >= 1 (got {cfg.train_steps})")
    out = Path(cfg.out)
    if (out / "analysis" / OUTPUT_MARKER).is_file() and not (out / OUTPUT_MARKER).exists():
        atomic_write_json(out / OUTPUT_MARKER, {"tool": "demo", "format": 1})  # a demo from before markers
    with claim_output_dir(out, "demo"):
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> int:
    from .analyze.batch import analyze_paths
    from .analyze.report import write_index
    from .detect import resolve_detector
    from .factory import load_model, save_model

    t0 = time.time()
    if cfg.checkpoint:
        print(f"[demo] analysing the sample clips with {cfg.checkpoint}")
        model, note = load_model(cfg.checkpoint, device=cfg.device), None
    else:
        print("[demo] NOTE: this trains a TINY model on the CPU; it is not a trained EmotionCLIP.")
        print(f"[demo] 1/3 preparing a corpus from the bundled sample clips -> {cfg.out / 'corpus'}")
        corpus, clips = prepare_corpus(cfg)
        print(
            f"[demo] 2/3 training a tiny EmotionCLIP for {cfg.train_steps} steps on the CPU -> {cfg.out / 'train'}"
        )
        result = train_tiny(cfg, corpus)
        note = TINY_WARNING.format(steps=cfg.train_steps, clips=clips)
        if result.losses:  # a rerun that reuses a finished run trains no step
            note += TINY_LEARNED.format(first=result.losses[0], last=result.losses[-1])
        model = load_model(result.checkpoint, device=cfg.device)
        # a stable name for the README's Python lines: load_model("emotionclip-demo/model")
        saved = save_model(model, cfg.out / MODEL_DIR, overwrite=True)
        print(f"[demo] the tiny model -> {saved} (emotionclip.load_model reads it)")
    print(f"[demo] 3/3 analysing {len(sample_videos())} sample videos -> {cfg.out / 'analysis'}")
    summary = analyze_paths(
        model,
        sample_videos(),
        cfg.out / "analysis",
        note=note,
        window=cfg.window,
        stride=cfg.stride,
        detector=resolve_detector("default"),
        device=cfg.device,
        settings={"checkpoint": cfg.checkpoint or "demo"},
        overwrite=True,  # reports of an earlier demo run may come from another model
    )
    # the batch overview again at the top of the demo folder, linking into analysis/
    index = write_index(cfg.out / "index.html", summary, note=note, title="EmotionCLIP demo")
    print(f"[demo] done in {time.time() - t0:.0f} s. Open {index.resolve()}")
    if note:
        print(f"[demo] {note}")
    return 1 if summary["failed"] else 0


def register(subparsers) -> None:
    d = subparsers.add_parser(
        "demo",
        help=f"the whole pipeline on the bundled sample clips (offline; {DEMO_TIME})",
        description="Prepare a corpus from the bundled sample clips, train a TINY EmotionCLIP on the CPU "
        "(not a trained model: the scores mean nothing), analyse the samples and write HTML reports. "
        "With --checkpoint, analyse the samples with those weights instead.",
    )
    d.add_argument("--out", type=Path, default=Path("emotionclip-demo"), help="output folder")
    d.add_argument("--checkpoint", help="real EmotionCLIP weights: skip preparing and training")
    d.add_argument(
        "--train-steps", type=int, default=DemoConfig.train_steps, help="training steps of the tiny model"
    )
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=_run)


def _run(args) -> int:
    from ._io import FileError

    cfg = DemoConfig(
        out=args.out, checkpoint=args.checkpoint, train_steps=args.train_steps, device=args.device
    )
    try:
        return run_demo(cfg)
    except (FileError, ValueError, OSError) as e:  # the folder, the options, the checkpoint: one line
        logger.error("%s", e)
        return 2
