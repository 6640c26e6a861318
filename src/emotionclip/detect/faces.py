"""BlazeFace full-range faces (MediaPipe TFLite, shipped in ``emotionclip/assets``), widened to
head-and-upper-body subject boxes. Finds people whose face is visible; a person seen from behind is
missed. Runs with ``ai-edge-litert`` on the CPU, no download."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from ..constants import ASSETS, BOX_SCORE_THRESHOLD
from .base import PersonDetector, _check_frames

logger = logging.getLogger(__name__)

BLAZEFACE_MODEL = ASSETS / "face_detection_full_range.tflite"


class BlazeFaceSubjectDetector(PersonDetector):
    """BlazeFace full-range faces, widened to head-and-upper-body subject boxes.

    The 192x192 model sees the whole frame (letterboxed) and, with ``tiles=True``, also two square
    crops at the ends of the long side, so small faces in wide frames are seen 1.3-1.8x larger; the
    detections of all views are merged by NMS. ``expand = (side, above, below)`` grows each face box
    by that many face widths to each side, face heights above and face heights below (``None`` keeps
    face boxes). Scores are the model's face confidences.
    """

    input_size = 192
    grid = 48  # one anchor per 4x4 cell of the 192x192 input (MediaPipe full-range SSD options)

    def __init__(
        self,
        model_path: str | Path | None = None,
        score_threshold: float = BOX_SCORE_THRESHOLD,
        nms_iou: float = 0.3,
        tiles: bool = True,
        expand: tuple[float, float, float] | None = (1.5, 0.5, 2.5),
        batch_size: int = 12,
        num_threads: int | None = None,
    ):
        self.model_path = Path(model_path) if model_path is not None else BLAZEFACE_MODEL
        if not self.model_path.is_file():
            raise FileNotFoundError(f"{self.model_path}: BlazeFace model file not found")
        self.score_threshold = score_threshold
        self.nms_iou = nms_iou
        self.tiles = tiles
        self.expand = expand
        self.batch_size = batch_size
        self.num_threads = num_threads or min(4, os.cpu_count() or 1)
        self.name = "blazeface-full-range" + ("+tiles" if tiles else "")
        self._interpreter = None
        self._batch = 0
        centres = (np.arange(self.grid, dtype=np.float32) + 0.5) / self.grid
        ay, ax = np.meshgrid(centres, centres, indexing="ij")
        self._anchors = np.stack([ax.ravel(), ay.ravel()], 1)  # [A, 2] normalised centres

    def __getstate__(self):  # the TFLite interpreter does not pickle; worker processes rebuild it
        state = self.__dict__.copy()
        state["_interpreter"], state["_batch"] = None, 0
        return state

    def _run(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """images float32 [B, 192, 192, 3] in [-1, 1] -> (regressors [B, A, 16], logits [B, A])."""
        if self._interpreter is None:
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError as e:
                raise ImportError(
                    "the default person detector needs ai-edge-litert (pip install ai-edge-litert)"
                ) from e
            try:
                self._interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.num_threads)
            except (ValueError, RuntimeError) as e:
                raise ValueError(f"{self.model_path}: not a loadable TFLite model ({e})") from e
        it = self._interpreter
        inp = it.get_input_details()[0]
        if self._batch != len(images):
            it.resize_tensor_input(inp["index"], [len(images), self.input_size, self.input_size, 3])
            it.allocate_tensors()
            self._batch = len(images)
        it.set_tensor(inp["index"], images)
        it.invoke()
        outs = [it.get_tensor(o["index"]) for o in it.get_output_details()]
        reg = next(o for o in outs if o.shape[-1] == 16).reshape(len(images), -1, 16)
        cls = next(o for o in outs if o.shape[-1] == 1).reshape(len(images), -1)
        return reg, cls

    def _views(self, height: int, width: int) -> list[tuple[int, int, int]]:
        """(x0, y0, side) of square views: the letterboxed frame, then end crops of the long side."""
        side = max(height, width)
        views = [(0, 0, side)]  # letterbox = a square of the long side anchored at the top-left
        short = min(height, width)
        if self.tiles and side > 1.2 * short:
            if width > height:
                views += [(0, 0, short), (width - short, 0, short)]
            else:
                views += [(0, 0, short), (0, height - short, short)]
        return views

    def _prepare(self, frames: np.ndarray, views) -> np.ndarray:
        """[N, H, W, 3] uint8 -> [N * V, 192, 192, 3] float32 in [-1, 1], black padded."""
        n, h, w, _ = frames.shape
        # uint8 channels-last is torch's fast antialiased resize path (~50x faster than float here)
        x = torch.from_numpy(frames).permute(0, 3, 1, 2)
        s = self.input_size
        out = torch.zeros(n, len(views), s, s, 3, dtype=torch.uint8)
        for v, (x0, y0, side) in enumerate(views):
            crop = x[:, :, y0 : min(h, y0 + side), x0 : min(w, x0 + side)].contiguous(
                memory_format=torch.channels_last
            )
            ch, cw = crop.shape[-2:]
            th, tw = round(ch * s / side), round(cw * s / side)
            resized = F.interpolate(crop, size=(th, tw), mode="bilinear", antialias=True)
            out[:, v, :th, :tw] = resized.permute(0, 2, 3, 1)
        return (out.reshape(n * len(views), s, s, 3).float() / 127.5 - 1.0).numpy()

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        n, h, w, _ = frames.shape
        if n == 0:
            return []
        views = self._views(h, w)
        per_chunk = max(1, self.batch_size // len(views))
        regs, logits = [], []
        for i in range(0, n, per_chunk):
            reg, cls = self._run(self._prepare(frames[i : i + per_chunk], views))
            regs.append(reg)
            logits.append(cls)
        reg = np.concatenate(regs).reshape(n, len(views), -1, 16)
        score = 1.0 / (1.0 + np.exp(-np.clip(np.concatenate(logits), -80, 80).reshape(n, len(views), -1)))

        # decode: (cx, cy, w, h) offsets in input pixels relative to fixed-size anchors, then to frame px
        s = float(self.input_size)
        cx = self._anchors[:, 0] + reg[..., 0] / s
        cy = self._anchors[:, 1] + reg[..., 1] / s
        bw, bh = reg[..., 2] / s, reg[..., 3] / s
        geom = np.array(views, np.float32)  # [V, 3] x0, y0, side
        x0, y0, side = (geom[None, :, k, None] for k in range(3))
        boxes = np.stack(
            [
                x0 + (cx - bw / 2) * side,
                y0 + (cy - bh / 2) * side,
                x0 + (cx + bw / 2) * side,
                y0 + (cy + bh / 2) * side,
            ],
            -1,
        )  # [N, V, A, 4]

        # one NMS over all frames and views (batched by frame), then face -> subject box
        keep = score > self.score_threshold
        frame_idx = np.broadcast_to(np.arange(n)[:, None, None], keep.shape)[keep]
        cand = np.concatenate([boxes[keep], score[keep][:, None]], 1).astype(np.float32)
        cand_t = torch.from_numpy(cand)
        kept = torchvision.ops.batched_nms(
            cand_t[:, :4], cand_t[:, 4], torch.from_numpy(frame_idx), self.nms_iou
        ).numpy()
        faces, owner = self._to_subject(cand[kept], h, w), frame_idx[kept]
        inside = (faces[:, 2] > faces[:, 0]) & (faces[:, 3] > faces[:, 1])  # drops boxes found in the padding
        faces, owner = faces[inside], owner[inside]
        return [faces[owner == i] for i in range(n)]

    def _to_subject(self, faces: np.ndarray, height: int, width: int) -> np.ndarray:
        """Grow face boxes by ``expand`` and clip them to the frame."""
        out = faces.copy()
        if self.expand is not None:
            side, above, below = self.expand
            fw, fh = faces[:, 2] - faces[:, 0], faces[:, 3] - faces[:, 1]
            out[:, 0] -= side * fw
            out[:, 2] += side * fw
            out[:, 1] -= above * fh
            out[:, 3] += below * fh
        out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
        out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
        return out
