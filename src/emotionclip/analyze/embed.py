"""Embeddings of whole videos (one per window) and of single images, with subject masks."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .._prefetch import prefetch
from ..constants import BOX_SCORE_THRESHOLD, DETECT_EVERY
from ..detect import as_boxes, resolve_detector
from ..runner import Runner, as_runner
from ..transform import boxes_to_mask, boxes_to_masks, model_transform
from ..video_io import VideoInfo, load_image, probe_video
from .persons import PerPerson, PersonRows, as_per_person, crop, renumber, renumbered_boxes, window_persons
from .windows import Window, batched, iter_windows, plan_windows

logger = logging.getLogger(__name__)

# frames are decoded at this short side (or native if smaller): the detector misses faces at 256
DETECT_SHORT_SIDE = 360


@dataclass(frozen=True)
class EmbedSettings:
    """How a video becomes window embeddings: the windows (seconds; :mod:`.windows`), who the
    subject is (``detector``: a name for :func:`~emotionclip.detect.resolve_detector`, a detector,
    or None; run on every ``detect_every``-th frame; ``track``: people followed through the video),
    ``per_person`` rows (True or :class:`~emotionclip.analyze.persons.PerPerson`) and how many
    windows go through the model at once."""

    window: float = 2.0
    stride: float = 1.0
    detector: Any = "default"
    batch_size: int = 8
    detect_every: int = DETECT_EVERY
    track: bool = True
    per_person: bool | PerPerson = False

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.people is not None and not self.track:
            raise ValueError("per_person needs track=True: persons are told apart by their track ids")

    @property
    def people(self) -> PerPerson | None:
        return as_per_person(self.per_person)

    def summary(self) -> dict:
        """What a batch summary records of these settings."""
        out = {"window": self.window, "stride": self.stride}
        if self.people is not None:  # only then: the default settings stay as they were
            out["per_person"] = {"min_share": self.people.min_share}
        return out


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
    # with per_person: one row per (window, person), each person's own mask (emotionclip.analyze.persons)
    persons: PersonRows | None = None

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
    people: _PeopleBatch | None = None


@dataclass
class _PeopleBatch:
    """The per-person part of a batch: the (grid frame, person) encodings no earlier batch brought,
    and each (window, person) clip as keys into them (a plain grid index: the union frame feature)."""

    pixels: torch.Tensor  # [F, 3, S, S]
    masks: torch.Tensor  # [F, S, S] the person's mask alone
    keys: list[tuple[int, int]]  # [F] (grid index, track id; 0 = nobody's mask)
    clips: list[list[int | tuple[int, int]]]  # R x T
    window: list[int]  # [R]
    person: list[int]  # [R] tracker ids
    boxes: list[list[np.ndarray]]  # R x T x [0 or 1, 6] source-video pixels


def _prepare_people(tf, windows: list[Window], used_per_window, settings: PerPerson, state) -> _PeopleBatch:
    """A (grid frame, person) is transformed and encoded once however many windows share it; where
    the person is the only subject of a frame (or nobody is), the union frame feature serves."""
    sent, thumbnails, scale = state["sent"], state["thumbnails"], state["scale"]
    keys, frames, masks_boxes = [], [], []
    clips, rows_w, rows_p, rows_b = [], [], [], []
    for w, used in zip(windows, used_per_window, strict=True):
        for p in window_persons(used, settings.min_share):
            clip, mine_all = [], []
            for m, frame, b in zip(w.grid.tolist(), w.frames, used, strict=True):
                mine = b[b[:, 5] == p] if b.shape[1] >= 6 else np.zeros((0, 6), np.float32)
                mine_all.append(mine)
                if len(mine) == len(b):  # alone, or nobody at all: the same mask as the union's
                    clip.append(m)
                    continue
                key = (m, p if len(mine) else 0)
                if key not in sent:
                    sent.add(key)
                    keys.append(key)
                    frames.append(frame)
                    masks_boxes.append(mine)
                clip.append(key)
            if p not in thumbnails:
                k = next(i for i, b in enumerate(mine_all) if len(b))
                thumbnails[p] = crop(w.frames[k], mine_all[k][0])
            clips.append(clip)
            rows_w.append(w.index)
            rows_p.append(p)
            rows_b.append([np.concatenate([b[:, :4] * scale, b[:, 4:]], axis=1) for b in mine_all])
    start = windows[-1].grid[0]
    sent.difference_update([k for k in sent if k[0] < start])
    pixels, masks = _transform(tf, frames, masks_boxes)
    return _PeopleBatch(pixels, masks, keys, clips, rows_w, rows_p, rows_b)


def _transform(tf, frames: list[np.ndarray], boxes: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Model pixels and subject masks of frames of one size with their boxes (empty tensors for none)."""
    if not frames:
        s = tf.image_size
        return torch.empty(0, 3, s, s), torch.empty(0, s, s, dtype=torch.uint8)
    h, w = frames[0].shape[:2]
    return tf(np.stack(frames), boxes_to_masks(boxes, h, w, BOX_SCORE_THRESHOLD))


def _prepare_batch(
    tf,
    windows: list[Window],
    source_width: int,
    keep: set[int],
    sent: set[int],
    people: tuple[PerPerson, dict] | None = None,
) -> _Batch:
    """Model inputs for a batch of windows; each frame is transformed once however many windows
    share it (``sent`` holds the grid indices already handed on). Decoded frames end here."""
    new_ids, new_frames, new_boxes, boxes, keyframes, used_per_window = [], [], [], [], [], []
    for w in windows:
        for m, frame, b in zip(w.grid.tolist(), w.frames, w.boxes, strict=True):
            if m not in sent:
                sent.add(m)
                new_ids.append(m)
                new_frames.append(frame)
                new_boxes.append(b)
        used = [_subject_boxes(b) for b in w.boxes]
        used_per_window.append(used)
        scale = source_width / w.frames.shape[2]
        boxes.append([np.concatenate([b[:, :4] * scale, b[:, 4:]], axis=1) for b in used])
        if w.index in keep:
            mid = len(w.frames) // 2
            keyframes.append(Keyframe(w.index, float(w.times[mid]), w.frames[mid].copy(), used[mid]))
    sent.difference_update([m for m in sent if m < windows[-1].grid[0]])  # later windows start later
    pixels, masks = _transform(tf, new_frames, new_boxes)
    grids = [w.grid.tolist() for w in windows]
    batch = _Batch(pixels, masks, new_ids, grids, boxes, keyframes, [w.padded for w in windows])
    if people is not None:
        settings, state = people
        state.setdefault("scale", source_width / windows[0].frames.shape[2])
        batch.people = _prepare_people(tf, windows, used_per_window, settings, state)
    return batch


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
    per_person: bool | PerPerson = False,
) -> VideoEmbedding:
    """One embedding per window of ``path`` (window rule: :mod:`emotionclip.analyze.windows`).

    Frames are decoded once, streaming (memory does not grow with the video's length), persons are
    detected on every ``detect_every``-th decoded frame (the frames between take the boxes of the
    last detected one) and become the subject mask; with ``track`` (the default) people are followed
    through the video (:mod:`emotionclip.detect.track`: every box carries a track id in its sixth
    column, a person missed in one detection keeps an interpolated box); a window with nobody in it is
    encoded with an empty mask and marked ``has_person=False``. ``keyframes`` windows spread over
    the video keep their middle frame for reports. ``per_person`` (True or
    :class:`~emotionclip.analyze.persons.PerPerson` settings; needs ``track``) adds one embedding per
    (window, person) in ``persons``, each person's clip encoded with that person's mask alone
    (:mod:`emotionclip.analyze.persons`: who is scored, how ids are numbered). Raises :class:`~emotionclip.video_io.VideoError`
    naming the file when it cannot be read.

    ``model`` is an EmotionCLIP (run at ``precision``, default fp32, on ``device``, default its own,
    without moving or switching the caller's model) or a runner of :func:`emotionclip.load_runner`,
    which brings its own device and precision.
    """
    settings = EmbedSettings(window, stride, detector, batch_size, detect_every, track, per_person)
    return embed_windows(as_runner(model, device, precision), path, settings, keyframes, progress)


def embed_windows(
    runner: Runner, path: str | Path, settings: EmbedSettings, keyframes: int = 12, progress: bool = False
) -> VideoEmbedding:
    """:func:`embed_video` with its settings in one object and the runner built."""
    people = settings.people
    info = probe_video(path)
    plan = plan_windows(info.duration, settings.window, settings.stride, runner.video_len)
    det = resolve_detector(settings.detector, device=runner.device)  # a name: on the model's GPU too
    tf = model_transform(runner)
    short_side = min(max(tf.resize, DETECT_SHORT_SIDE), info.width, info.height)
    keep = set(np.linspace(0, len(plan) - 1, max(0, min(keyframes, len(plan)))).round().astype(int).tolist())

    features: list[torch.Tensor] = []
    boxes: list[list[np.ndarray]] = []
    kept: list[Keyframe] = []
    padded: list[int] = []
    frame_features: dict[int, torch.Tensor] = {}  # grid index -> encoded frame, while windows need it
    sent: set[int] = set()
    # per person: (grid index, track id) -> encoded frame with that person's mask, while windows need it
    person_features: dict[tuple[int, int], torch.Tensor] = {}
    person_parts: dict[str, list] = {"features": [], "window": [], "person": [], "boxes": []}
    people_state: dict = {"sent": set(), "thumbnails": {}}
    # a pipeline ahead of the model: decoding, detection (batched) and the transform each run in
    # their own thread, so windows/s follows the encoder while it is the slowest stage
    windows = iter_windows(
        path,
        info,
        plan,
        det,
        short_side=short_side,
        workers=1,
        detect_every=settings.detect_every,
        track=settings.track,
    )
    people_args = None if people is None else (people, people_state)
    batches = (
        _prepare_batch(tf, b, info.width, keep, sent, people_args)
        for b in batched(windows, settings.batch_size)
    )
    with tqdm(total=len(plan), desc=Path(path).name, unit="win", disable=not progress, leave=False) as bar:
        for batch in prefetch(batches, depth=2):
            # encode_video = visual_head(encode_image(frames)): overlapping windows share frames, so
            # each frame goes through the frame encoder once and only the temporal head runs per window
            if batch.frame_ids:
                encoded = runner.encode_image(batch.pixels, batch.masks)
                frame_features.update(zip(batch.frame_ids, encoded, strict=True))
            clips = torch.stack([torch.stack([frame_features[m] for m in ids]) for ids in batch.windows])
            features.append(runner.visual_head(clips).cpu())
            if batch.people is not None:
                _encode_people(runner, batch, frame_features, person_features, person_parts)
            for m in [m for m in frame_features if m < batch.windows[-1][0]]:
                del frame_features[m]
            boxes.extend(batch.boxes)
            kept.extend(batch.keyframes)
            padded.extend(batch.padded)
            bar.update(len(batch.windows))
    features = torch.cat(features)
    persons = None
    if people is not None:
        persons, boxes, kept = _person_rows(person_parts, people_state["thumbnails"], boxes, kept, features)
        if not len(persons):
            logger.warning("%s: nobody tracked long enough in any window: no person rows", path)
    return VideoEmbedding(
        path=str(path),
        info=info,
        starts=plan.starts,
        ends=plan.ends,
        features=features,
        boxes=boxes,
        has_person=np.array([any(len(b) for b in per_frame) for per_frame in boxes], dtype=bool),
        padded=np.array(padded, dtype=np.int64),
        keyframes=kept,
        persons=persons,
    )


def _encode_people(runner, batch: _Batch, frame_features, person_features, parts) -> None:
    """Encode the batch's new (frame, person) inputs in one pass and all its person clips in another."""
    p = batch.people
    if p.keys:
        person_features.update(zip(p.keys, runner.encode_image(p.pixels, p.masks), strict=True))
    if p.clips:
        pick = lambda k: frame_features[k] if isinstance(k, int) else person_features[k]  # noqa: E731
        clips = torch.stack([torch.stack([pick(k) for k in clip]) for clip in p.clips])
        parts["features"].append(runner.visual_head(clips).cpu())
    parts["window"].extend(p.window)
    parts["person"].extend(p.person)
    parts["boxes"].extend(p.boxes)
    for k in [k for k in person_features if k[0] < batch.windows[-1][0]]:
        del person_features[k]


def _person_rows(parts, thumbnails, boxes, keyframes, features):
    """The person rows with ids renumbered 1..K, and the union boxes and keyframes carrying the same
    ids (0 for tracks never scored)."""
    ids = renumber(parts["person"])
    dim = features.shape[1]
    rows = PersonRows(
        window=np.array(parts["window"], np.int64),
        person=np.array([ids[t] for t in parts["person"]], np.int64),
        features=torch.cat(parts["features"]) if parts["features"] else torch.empty(0, dim),
        boxes=[[renumbered_boxes(b, ids) for b in frames] for frames in parts["boxes"]],
        thumbnails={ids[t]: image for t, image in thumbnails.items()},
    )
    boxes = [[renumbered_boxes(b, ids) for b in frames] for frames in boxes]
    for k in keyframes:
        k.boxes = renumbered_boxes(k.boxes, ids)
    return rows, boxes, keyframes


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
    runner = as_runner(model, device, precision)
    if boxes is None:
        det = resolve_detector(detector, device=runner.device)
        boxes = det.detect(image[None])[0] if det is not None else np.zeros((0, 5), np.float32)
    mask = boxes_to_mask(boxes, image.shape[0], image.shape[1], BOX_SCORE_THRESHOLD)
    pixels, mask = model_transform(runner)(image, mask)
    return runner.encode_image(pixels[None], mask[None]).cpu()[0]
