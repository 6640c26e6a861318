"""``emotionclip export``: a checkpoint as ONNX or OpenVINO graphs for the inference backends."""

from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

_FORMATS = ("onnx", "openvino")  # emotionclip.export.FORMATS, without importing torch for --help
_PRECISIONS = ("fp32", "bf16", "int8")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint as ONNX / OpenVINO graphs (frame encoder, temporal head, text encoder)",
        description="Write OUT/ with frame_encoder, temporal_head and text_encoder graphs (dynamic batch) and "
        "emotionclip_export.json (model config, preprocessing). Load it with "
        "emotionclip.load_runner(OUT, backend='onnxruntime'|'openvino') or --backend in analyze/embed. "
        "int8 quantises the frame encoder (ONNX Runtime dynamic quantisation; NNCF calibrated on the "
        "sample media for OpenVINO); bf16 is OpenVINO's bf16 inference hint (CPUs with bf16 instructions).",
    )
    p.add_argument(
        "--checkpoint", required=True, type=Path, help="EmotionCLIP weights (any load_model format)"
    )
    p.add_argument("--format", choices=_FORMATS, default="onnx", help="graph format (default onnx)")
    p.add_argument("--precision", choices=_PRECISIONS, default="fp32", help="default fp32")
    p.add_argument("--out", required=True, type=Path, help="new folder for the export")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it is an earlier export")
    p.set_defaults(func=run_export)


def run_export(args) -> int:
    from .export import export_model
    from .factory import load_model

    try:
        model = load_model(args.checkpoint)
        out = export_model(
            model,
            args.out,
            args.format,
            args.precision,
            overwrite=args.overwrite,
            source=str(args.checkpoint),
        )
    except (OSError, ValueError, ImportError) as e:
        logger.error("%s", e)
        return 2
    logger.info("wrote %s", out)
    return 0
