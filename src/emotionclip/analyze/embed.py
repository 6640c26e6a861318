"""Embeddings of whole videos (one per window) and of single images, with subject masks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._prefetch import prefetch
from ..backends import as_inference_model
from ..constants import BOX_SCORE_THRESHOLD, DETECT_EVERY
from ..detect import as_boxes, resolve_detector
from ..transform import boxes_to_mask, boxes_to_masks, model_transform
from ..video_io import VideoInfo, load_image, probe_video
from .windows import Window, batched, iter_windows, plan_windows

logger = logging.getLogger(__name__)

# frames are decoded at this short side (or native if smaller): the detector misses faces at 256
DETECT_SHORT_SIDE = 360


@dataclass
class Keyframe:
    """The middle frame of one window, kept for reports (decode size), with its subject boxes."""

    window: int
    time: float
    image: np.ndarray  # [H, W, 3] uint8
    boxes: np.ndarray  # [K, 5] in this image's pixels, only the boxes used as subject


@dataclass
class VideoEmbedding:
    path: str
    info: VideoInfo
    starts: np.ndarray  # [N] seconds
    ends: np.ndarray  # [N] seconds
    features: torch.Tensor  # [N, D] float32, un-normalised encode_video output
    boxes: list[list[np.ndarray]]  # N x T x [K, 5] subject boxes in source-video pixels
    has_person: np.ndarray  # [N] bool: some frame of the window has a subject box
    padded: np.ndarray | None = None  # [N] frames past the end of a truncated stream (repeated)
    keyframes: list[Keyframe] = field(default_factory=list)

    @property
    def normalized(self) -> torch.Tensor:
        return torch.nn.functional.normalize(self.features, dim=-1)


def _subject_boxes(boxes: np.ndarray) -> np.ndarray:
    boxes = as_boxes(boxes)
    return boxes[boxes[:, 4] > BOX_SCORE_THRESHOLD]


@dataclass
class _Batch:
    """A batch of windows, with only the frames that no earlier batch already brought."""

    pixels: torch.Tensor  # [F, 3, S, S] new frames
    masks: torch.Tensor  # [F, S, S] their subject masks
    frame_ids: list[int]  # [F] their grid indices
    windows: list[list[int]]  # B x T grid indices of each window's frames
    boxes: list[list[np.ndarray]]  # B x T x [K, 5] subject boxes in source-video pixels
    keyframes: list[Keyframe]
    padded: list[int]


def _prepare_batch(tf, windows: list[Window], source_width: int, keep: set[int], sent: set[int]) -> _Batch:
    """Model inputs for a batch of windows; each frame is transformed once however many windows
    share it (``sent`` holds the grid indices already handed on). Decoded frames end here."""
    new_ids, new_frames, new_boxes, boxes, keyframes = [], [], [], [], []
    for w in windows:
        for m, frame, b in zip(w.grid.tolist(), w.frames, w.boxes, strict=True):
            if m not in sent:
                sent.add(m)
                new_ids.append(m)
                new_frames.append(frame)
                new_boxes.append(b)
        used = [_subject_boxes(b) for b in w.boxes]
        scale = source_width / w.frames.shape[2]
        boxes.append([np.concatenate([b[:, :4] * scale, b[:, 4:]], axis=1) for b in used])
        if w.index in keep:
            mid = len(w.frames) // 2
            keyframes.append(Keyframe(w.index, float(w.times[mid]), w.frames[mid].copy(), used[mid]))
    sent.difference_update([m for m in sent if m < windows[-1].grid[0]])  # later windows start later
    if new_frames:
        h, wd = new_frames[0].shape[:2]
        pixels, masks = tf(np.stack(new_frames), boxes_to_masks(new_boxes, h, wd, BOX_SCORE_THRESHOLD))
    else:
        s = tf.image_size
        pixels, masks = torch.empty(0, 3, s, s), torch.empty(0, s, s, dtype=torch.uint8)
    grids = [w.grid.tolist() for w in windows]
    return _Batch(pixels, masks, new_ids, grids, boxes, keyframes, [w.padded for w in windows])


def embed_video(
    model,
    path: str | Path,
    window: float = 2.0,
    stride: float = 1.0,
    detector="default",
    batch_size: int = 8,
    device: str | torch.device | None = None,
    precision: str | None = None,
    keyframes: int = 12,
    progress: bool = False,
    detect_every: int = DETECT_EVERY,
    track: bool = True,
) -> VideoEmbedding:
    """One embedding per window of ``path`` (window rule: :mod:`emotionclip.analyze.windows`).

    Frames are decoded once, streaming (memory does not grow with the video's length), persons are
    detected on every ``detect_every``-th decoded frame (the frames between take the boxes of the
    last detected one) and become the subject mask; with ``track`` (the default) people are followed
    through the video (:mod:`emotionclip.detect.track`: every box carries a track id in its sixth
    column, a person missed in one detection keeps an interpolated box); a window with nobody in it is
    encoded with an empty mask and marked ``has_person=False``. ``keyframes`` windows spread over
    the video keep their middle frame for reports. Raises :class:`~emotionclip.video_io.VideoError`
    naming the file when it cannot be read.

    ``model`` is an EmotionCLIP (run at ``precision``, default fp32, on ``device``, default its own,
    without moving or switching the caller's model) or a backend object of
    ``load_model(..., backend=...)``, which brings its own device and precision.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    info = probe_video(path)
    plan = plan_windows(info.duration, window, stride, model.video_len)
    det = resolve_detector(detector)
    runner = as_inference_model(model, device, precision)
    tf = model_transform(runner)
    short_side = min(max(tf.resize, DETECT_SHORT_SIDE), info.width, info.height)
    keep = set(np.linspace(0, len(plan) - 1, max(0, min(keyframes, len(plan)))).round().astype(int).tolist())

    features: list[torch.Tensor] = []
    boxes: list[list[np.ndarray]] = []
    kept: list[Keyframe] = []
    padded: list[int] = []
    frame_features: dict[int, torch.Tensor] = {}  # grid index -> encoded frame, while windows need it
    sent: set[int] = set()
    # a pipeline ahead of the model: decoding, detection (batched) and the transform each run in
    # their own thread, so windows/s follows the encoder while it is the slowest stage
    windows = iter_windows(
        path, info, plan, det, short_side=short_side, workers=1, detect_every=detect_every, track=track
    )
    batches = (_prepare_batch(tf, b, info.width, keep, sent) for b in batched(windows, batch_size))
    with tqdm(total=len(plan), desc=Path(path).name, unit="win", disable=not progress, leave=False) as bar:
        for batch in prefetch(batches, depth=2):
            # encode_video = visual_head(encode_image(frames)): overlapping windows share frames, so
            # each frame goes through the frame encoder once and only the temporal head runs per window
            if batch.frame_ids:
                encoded = runner.encode_image(batch.pixels, batch.masks)
                frame_features.update(zip(batch.frame_ids, encoded, strict=True))
            clips = torch.stack([torch.stack([frame_features[m] for m in ids]) for ids in batch.windows])
            features.append(runner.visual_head(clips).cpu())
            for m in [m for m in frame_features if m < batch.windows[-1][0]]:
                del frame_features[m]
            boxes.extend(batch.boxes)
            kept.extend(batch.keyframes)
            padded.extend(batch.padded)
            bar.update(len(batch.windows))
    return VideoEmbedding(
        path=str(path),
        info=info,
        starts=plan.starts,
        ends=plan.ends,
        features=torch.cat(features),
        boxes=boxes,
        has_person=np.array([any(len(b) for b in per_frame) for per_frame in boxes], dtype=bool),
        padded=np.array(padded, dtype=np.int64),
        keyframes=kept,
    )


def embed_image(
    model,
    image_or_path,
    boxes: np.ndarray | None = None,
    detector="default",
    device: str | torch.device | None = None,
    precision: str | None = None,
) -> torch.Tensor:
    """Embedding ``[D]`` (un-normalised ``encode_image``) of one image: a path, PIL image or uint8 array.

    The subject is ``boxes`` (``[K, 4]`` or ``[K, 5]`` in image pixels) when given, else the persons
    the detector finds; ``detector=None`` with no boxes encodes the image with no subject.
    ``model``, ``device`` and ``precision`` as in :func:`embed_video`.
    """
    image = load_image(image_or_path)
    if boxes is None:
        det = resolve_detector(detector)
        boxes = det.detect(image[None])[0] if det is not None else np.zeros((0, 5), np.float32)
    mask = boxes_to_mask(boxes, image.shape[0], image.shape[1], BOX_SCORE_THRESHOLD)
    runner = as_inference_model(model, device, precision)
    pixels, mask = model_transform(runner)(image, mask)
    return runner.encode_image(pixels[None], mask[None]).cpu()[0]
