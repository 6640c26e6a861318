"""Where backends keep what they make once per model: exports and the choices of ``auto``."""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# (runtime, precision) -> the export it runs from; OpenVINO reads ONNX, so only its int8 needs NNCF's IR
_EXPORT_FOR = {
    ("onnxruntime", "fp32"): ("onnx", "fp32"),
    ("onnxruntime", "int8"): ("onnx", "int8"),
    ("openvino", "fp32"): ("onnx", "fp32"),
    ("openvino", "bf16"): ("onnx", "fp32"),
    ("openvino", "int8"): ("openvino", "int8"),
}


def cache_dir() -> Path:
    """``$EMOTIONCLIP_CACHE``, else ``$XDG_CACHE_HOME/emotionclip``, else ``~/.cache/emotionclip``."""
    if os.environ.get("EMOTIONCLIP_CACHE"):
        return Path(os.environ["EMOTIONCLIP_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "emotionclip"


def cached_export(model, runtime: str, precision: str, rebuild: bool = False) -> Path:
    """The export folder ``runtime`` at ``precision`` runs from, made once per model in the cache;
    ``rebuild`` makes it again (a damaged one; the fp32 graphs a quantised export starts from too)."""
    from filelock import FileLock

    from ..export import EXPORT_CONFIG, export_model, model_hash

    fmt, export_precision = _EXPORT_FOR[(runtime, precision)]
    folder = cache_dir() / "exports" / model_hash(model) / f"{fmt}-{export_precision}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    base = None
    if (fmt, export_precision) != ("onnx", "fp32"):  # quantised exports start from the fp32 graphs
        base = cached_export(model, "onnxruntime", "fp32", rebuild=rebuild)
    with FileLock(str(folder) + ".lock"):  # ranks of one job export once
        if rebuild or not (folder / EXPORT_CONFIG).is_file():
            logger.info("exporting the model for %s %s into %s (once per model)", runtime, precision, folder)
            export_model(model, folder, fmt, export_precision, overwrite=folder.exists(), fp32_onnx=base)
    return folder
