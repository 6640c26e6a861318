"""`emotionclip prepare INPUT OUT_DIR [options]` and `emotionclip prepare --merge OUT_DIR`."""

from __future__ import annotations

import argparse
import json
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prepare",
        help="videos + subtitles -> WebDataset training shards",
        description="Turn a folder of videos with subtitles (.srt/.vtt/YouTube .json beside each video, or "
        "a text subtitle track inside it), or a CSV/JSONL manifest, into WebDataset shards for training. "
        "Resumable: rerun the same command to continue. With --part I/N (or torchrun / srun ranks), run N "
        "slices on N machines; the last to finish merges the manifests (`--merge OUT_DIR` does it by hand).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="INPUT OUT_DIR",
        help="input folder / video / manifest, and the output folder (only OUT_DIR with --merge)",
    )
    p.add_argument("--merge", action="store_true", help="combine the manifests of a --part run in OUT_DIR")
    p.add_argument("--workers", type=int, default=0, help="worker processes (0: in the main process)")
    p.add_argument(
        "--device",
        default="cpu",
        help="where the person detector runs: cpu, cuda, cuda:1 (MoveNet / NanoDet on ONNX Runtime's CUDA "
        "provider, torchvision on torch; under torchrun / srun a bare cuda is each process's own GPU)",
    )
    p.add_argument(
        "--part",
        default=None,
        metavar="I/N",
        help="process only slice I of N (0-based), e.g. $SLURM_ARRAY_TASK_ID/16",
    )
    p.add_argument(
        "--detector",
        default="default",
        help="person detector: default | torchvision[:ARCH] | json:PATH | release-boxes:PATH,fps=8 (the "
        "release's own per-video human_boxes.json files) | py:module:factory | none",
    )
    p.add_argument(
        "--no-track",
        dest="track",
        action="store_false",
        help="detect each frame alone, as the release does (default: people are followed through each "
        "clip's frames, a person missed in one frame between two detections keeps a box)",
    )
    p.add_argument(
        "--scorer",
        default="default",
        help="sentiment scorer: default | HF hub name | local HF model dir | .npz | py:module:factory",
    )
    p.add_argument(
        "--segmenter",
        default="default",
        help="sentence segmenter: default (punctuation, pauses, length) | punctuation | release "
        "(the release's regroup_transcripts.py: split only at '.', marks removed) | py:module:factory",
    )
    p.add_argument(
        "--punctuation",
        default=None,
        metavar="MODEL",
        help="restore punctuation first with this HF token-classification model (hub name or folder); "
        "the release used oliverguhr/fullstop-punctuation-multilang-large with --segmenter release",
    )
    p.add_argument(
        "--exclude-ids",
        default="release-bold",
        metavar="FILE",
        help="skip videos whose YouTube id (file name ID, ID&..., 'Title [ID]', or a manifest youtube_id "
        "column) is listed: release-bold (the release's BoLD-overlap list, shipped), a file with one "
        "id per line, or none",
    )
    p.add_argument("--fps", type=float, default=8.0, help="frames per second stored")
    p.add_argument("--short-side", type=int, default=256, help="frames resized to this short side")
    p.add_argument("--jpeg-quality", type=int, default=90)
    p.add_argument("--min-duration", type=float, default=2.0, help="keep clips longer than this (s)")
    p.add_argument("--max-duration", type=float, default=10.0, help="keep clips shorter than this (s)")
    p.add_argument(
        "--min-chars", type=int, default=3, help="keep sentences with at least this many characters"
    )
    p.add_argument(
        "--min-frames", type=int, default=8, help="keep clips with at least this many frames at --fps"
    )
    p.add_argument(
        "--max-neutral",
        type=float,
        default=0.05,
        help="keep clips whose neutral probability is <= this (1 keeps all)",
    )
    p.add_argument(
        "--min-person-fraction",
        type=float,
        default=0.0,
        help="keep clips where at least this fraction of frames has a person (0: keep all, as the "
        "release; the fraction is stored as has_person and can be filtered at training time)",
    )
    p.add_argument(
        "--frame-grid",
        choices=("video", "release", "clip"),
        default="video",
        help="which frames a clip stores: video = frames n/fps for n from ceil(start*fps) to "
        "floor(end*fps), both included (the release's frame numbers); release = the same numbers "
        "showing (n-1)/fps, as the release's ffmpeg dump numbered from 1 (1/fps earlier; a clip "
        "starting before 1/fps is dropped); clip = start + k/fps before end",
    )
    p.add_argument(
        "--past-end",
        choices=("cut", "drop"),
        default="cut",
        help="a sentence running past the video's end: cut at the end, or drop it (the release: its "
        "frames are not all in the dump)",
    )
    p.add_argument("--shard-clips", type=int, default=500, help="clips per shard")
    p.add_argument("--retry-failed", action="store_true", help="retry videos that failed in an earlier run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from .._io import FileError
    from ..jobs import parse_part
    from .clips import ClipFilter
    from .pipeline import PrepareConfig, exit_code, merge, prepare

    if args.merge:
        if len(args.paths) != 1:
            logger.error("--merge takes only OUT_DIR")
            return 2
        try:
            merged = merge(args.paths[0])
        except (FileError, OSError, ValueError) as e:
            logger.error("%s", e)
            return 2
        print(json.dumps({k: merged[k] for k in ("clips", "hours", "videos", "parts")}, indent=2))
        return 0
    if len(args.paths) != 2:
        logger.error("expected INPUT OUT_DIR, got %d paths", len(args.paths))
        return 2
    try:
        part = parse_part(args.part) if args.part else None
    except ValueError as e:
        logger.error("%s", e)
        return 2
    config = PrepareConfig(
        detector=args.detector,
        device=args.device,
        track=args.track,
        scorer=args.scorer,
        segmenter=args.segmenter,
        punctuation=args.punctuation,
        exclude_ids=None if args.exclude_ids == "none" else args.exclude_ids,
        filter=ClipFilter(
            min_duration=args.min_duration,
            max_duration=args.max_duration,
            min_chars=args.min_chars,
            min_frames=args.min_frames,
            fps=args.fps,
            max_neutral=args.max_neutral,
            min_person_fraction=args.min_person_fraction,
            frame_grid=args.frame_grid,
            past_end=args.past_end,
        ),
        short_side=args.short_side,
        jpeg_quality=args.jpeg_quality,
        shard_clips=args.shard_clips,
        workers=args.workers,
        part=part,
        retry_failed=args.retry_failed,
    )
    input_path, out_dir = args.paths
    try:
        summary = prepare(input_path, out_dir, config)
    except (FileError, OSError, ValueError) as e:  # bad input, output folder refused or locked
        logger.error("%s", e)
        return 2
    if summary["inputs"] == 0:
        logger.error(
            "%s: no videos found (extensions: see emotionclip.video_io.VIDEO_EXTENSIONS)", input_path
        )
    elif exit_code(summary):
        logger.error("nothing could be processed: see %s/summary*.json for each video's reason", out_dir)
    return exit_code(summary)
