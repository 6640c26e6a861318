"""The person-detector interface and the helpers every detector shares.

Boxes are ``[K, 5]`` float32 ``(x1, y1, x2, y2, score)`` per frame, in pixels of that frame; boxes
followed through time (:mod:`.track`) carry a sixth column, the track id (``[K, 6]``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..constants import BOX_SCORE_THRESHOLD

logger = logging.getLogger(__name__)

BOX_COLUMNS = ("x1", "y1", "x2", "y2", "score", "track")


def as_boxes(boxes, where: str = "boxes") -> np.ndarray:
    """Any box list -> float32 ``[K, 5]`` or ``[K, 6]`` (with track ids), ``[0, 5]`` when empty."""
    b = np.asarray(boxes if boxes is not None and np.size(boxes) else np.zeros((0, 5)), np.float32)
    b = b[None] if b.ndim == 1 else b
    if b.ndim != 2 or b.shape[1] not in (5, 6):
        raise ValueError(
            f"{where}: expected [K, 5] or [K, 6] (x1, y1, x2, y2, score[, track]), got {list(b.shape)}"
        )
    return b


def rescale_scores(raw: np.ndarray, threshold: float) -> np.ndarray:
    """Raw scores -> the release's scale: piecewise linear, 0 -> 0, ``threshold`` -> 0.5, 1 -> 1.

    Every consumer of boxes (``boxes_to_mask``, has-person, analyze) keeps scores above
    ``BOX_SCORE_THRESHOLD`` = 0.5, as the release does with YOLOv7; on this scale a detector's
    calibrated threshold is that same 0.5, and the order of the scores is unchanged.
    """
    raw = np.asarray(raw, np.float32)
    low = raw / threshold * BOX_SCORE_THRESHOLD
    high = BOX_SCORE_THRESHOLD + (raw - threshold) / (1 - threshold) * (1 - BOX_SCORE_THRESHOLD)
    return np.where(raw <= threshold, low, high).astype(np.float32)


def onnx_providers(device: str | None, available: Sequence[str]) -> list:
    """ONNX Runtime execution providers for ``device``: ``cuda``/``cuda:N`` -> the CUDA provider on
    GPU N, then the CPU, when this onnxruntime has it; otherwise (and for ``cpu``/None) the CPU alone,
    with a log line when a GPU was asked for and cannot be used."""
    if device is None or not str(device).startswith("cuda"):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in available:
        logger.warning(
            "device %s: this onnxruntime has no CUDAExecutionProvider (providers: %s); the detector runs on the CPU",
            device,
            ", ".join(available) or "none",
        )
        return ["CPUExecutionProvider"]
    index = str(device).partition(":")[2] or "0"
    return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]


def onnx_session(path: Path, num_threads: int | None, what: str, device: str | None = None):
    """An ONNX Runtime session for a shipped detector graph (on the GPU with ``device="cuda"`` when
    onnxruntime can, see :func:`onnx_providers`); a clear error for a bad file."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ImportError(f"the {what} needs onnxruntime (pip install onnxruntime)") from e
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = num_threads or min(4, os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    # it runs beside the encoder (analyze, evaluate, prepare workers): sleep when idle, not spin
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    providers = onnx_providers(device, ort.get_available_providers())
    try:
        return ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable files
        raise ValueError(f"{path}: not a loadable ONNX model ({e})") from e


def resize_long_side(frames: np.ndarray, size: int, multiple: int = 32):
    """uint8 ``[N, H, W, 3]`` -> (uint8 ``[N, 3, th, tw]`` with long side ``size``, aspect kept; the
    scale; the input height and width, ``th``/``tw`` padded up to ``multiple``)."""
    import torch
    import torch.nn.functional as F

    n, h, w, _ = frames.shape
    scale = size / max(h, w)
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    hp, wp = (max(multiple, -(-v // multiple) * multiple) for v in (th, tw))
    if not frames.flags.writeable:  # decoded or memory-mapped frames; torch wants writable memory
        frames = frames.copy()
    # uint8 channels-last is torch's fast antialiased resize path
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    return F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True), scale, hp, wp


def finish_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    scale: float,
    width: int,
    height: int,
    *,
    nms_iou: float,
    score_threshold: float,
    frame_threshold: float,
    rescale: bool,
) -> np.ndarray:
    """Candidate boxes ``[K, 4]`` in input pixels and their raw scores -> the frame's ``[K, 5]``: NMS,
    back to frame pixels and clipped; none unless the best passes ``frame_threshold``, then those
    above ``score_threshold``, scores rescaled so that ``score_threshold`` reads 0.5."""
    import torch
    import torchvision

    keep = scores > score_threshold
    b, s = torch.from_numpy(np.ascontiguousarray(boxes[keep])), torch.from_numpy(scores[keep])
    kept = torchvision.ops.nms(b.float(), s.float(), nms_iou).numpy()
    b, s = b.numpy()[kept] / scale, s.numpy()[kept]
    b[:, [0, 2]] = b[:, [0, 2]].clip(0, width)
    b[:, [1, 3]] = b[:, [1, 3]].clip(0, height)
    if len(s) and s.max() <= frame_threshold:  # no confident person: nobody here
        b, s = b[:0], s[:0]
    s = rescale_scores(s, score_threshold) if rescale else s
    found = np.concatenate([b.reshape(-1, 4), s[:, None]], 1).astype(np.float32)
    return found[(found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])]


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


class PersonDetector:
    """Finds the people in RGB frames. Subclasses set ``name`` and implement :meth:`detect`."""

    name: str = "abstract"

    def detect(
        self,
        frames: np.ndarray,
        *,
        video: str | None = None,
        times: Sequence[float] | None = None,
    ) -> list[np.ndarray]:
        """``frames`` uint8 ``[N, H, W, 3]`` RGB -> N arrays ``[K, 5]`` float32 ``(x1, y1, x2, y2, score)``
        in pixels of those frames. ``video`` (file path or id) and ``times`` (seconds in it) identify
        the frames; only detectors that look boxes up (``json:``) need them."""
        raise NotImplementedError

    def __call__(self, frames, **kw) -> list[np.ndarray]:
        return self.detect(frames, **kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
