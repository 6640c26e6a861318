"""Precomputed boxes read from a JSON file (``json:PATH``) and the writer of that format."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._io import FileError, atomic_write
from .base import PersonDetector, _check_frames, as_boxes

logger = logging.getLogger(__name__)

JSON_BOXES_FORMAT = "emotionclip-boxes/2"
# /1: five numbers a box; /2 adds the track id as a sixth (people followed through time, detect.track)
JSON_BOXES_FORMATS = ("emotionclip-boxes/1", JSON_BOXES_FORMAT)


class JsonBoxesError(FileError, ValueError):
    """A boxes file is malformed or lacks what was asked of it; the message starts with its path."""


class JsonBoxDetector(PersonDetector):
    """Boxes read from a JSON file instead of computed. Schema (``format`` = ``emotionclip-boxes/2``)::

        {"format": "emotionclip-boxes/2",
         "detector": "what made them (free text, optional)",
         "videos": {
           "<video key>": {
             "width": 640, "height": 480,      # frame size the boxes are in pixels of
             "fps": 25.0,                      # only needed when frames are given by "frame"
             "frames": [
               {"t": 0.125, "boxes": [[x1, y1, x2, y2, score, track], ...]},   # t = seconds in the video
               {"frame": 7, "boxes": []},                               # or the frame index (t = frame / fps)
               ...]}}}

    ``track`` (the person's track id, :mod:`.track`) may be left out: ``emotionclip-boxes/1`` files,
    five numbers a box, load as they are. A video key matches the ``video`` passed to :meth:`detect` when it is a trailing part of its path
    (``clips/a.mp4`` and ``a.mp4`` both match ``/data/clips/a.mp4``) or its stem (``a``). Each requested time takes the listed frame nearest to it within
    ``tolerance`` seconds (default 0.0625, half a frame at 8 fps); boxes are rescaled to the size of
    the frames passed in. A listed frame with ``"boxes": []`` means nobody; a video or time that is
    not listed is an error (the file does not say whether anyone is there).

    Boxes are checked as they are read: a box that is not finite, inverted, empty or wholly outside
    its frame is an error naming the file, video and time; one reaching past the frame's edge is
    clipped to it (counted in ``clipped``).
    """

    def __init__(self, path: str | Path, tolerance: float = 0.0625):
        self.path = Path(path)
        self.tolerance = tolerance
        self.name = f"json:{self.path}"
        self.clipped = 0
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: boxes JSON not found")
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise JsonBoxesError(self.path, f"not valid JSON ({e})") from e
        if (
            not isinstance(data, dict)
            or data.get("format") not in JSON_BOXES_FORMATS
            or not isinstance(data.get("videos"), dict)
        ):
            raise JsonBoxesError(
                self.path,
                f"expected {{'format': '{JSON_BOXES_FORMAT}' (or '{JSON_BOXES_FORMATS[0]}'), 'videos': {{...}}}}",
            )
        self.videos = {key: self._parse_video(key, v) for key, v in data["videos"].items()}
        if self.clipped:
            logger.warning(
                "%s: %d boxes reached past their frame and were clipped to it", self.path, self.clipped
            )

    def _parse_video(self, key: str, v: dict) -> tuple[np.ndarray, list[np.ndarray], int, int]:
        where = f"video {key!r}"
        try:
            width, height = int(v["width"]), int(v["height"])
            times, boxes = [], []
            for f in v["frames"]:
                t = float(f["t"]) if "t" in f else int(f["frame"]) / float(v["fps"])
                b = as_boxes(np.asarray(f["boxes"], np.float64), f"{where} t={f.get('t', f.get('frame'))}")
                times.append(t)
                boxes.append(b)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            raise JsonBoxesError(
                self.path, f"{where}: malformed entry ({type(e).__name__}: {e}); see JsonBoxDetector docs"
            ) from e
        if width <= 0 or height <= 0:
            raise JsonBoxesError(self.path, f"{where}: frame size {width}x{height} must be positive")
        if not all(map(math.isfinite, times)):
            raise JsonBoxesError(self.path, f"{where}: a frame time is not finite")
        boxes = [self._checked(b, width, height, f"{where} t={t:.3f}") for t, b in zip(times, boxes)]
        order = np.argsort(times)
        return np.asarray(times)[order], [boxes[i] for i in order], width, height

    def _checked(self, boxes: np.ndarray, width: int, height: int, where: str) -> np.ndarray:
        for b in boxes:
            if not np.isfinite(b).all():
                raise JsonBoxesError(self.path, f"{where}: box {b.tolist()} is not finite")
            if b[2] <= b[0] or b[3] <= b[1]:
                raise JsonBoxesError(
                    self.path, f"{where}: box {b.tolist()} is inverted or empty (need x2 > x1, y2 > y1)"
                )
        clipped = boxes.copy()
        clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, width)
        clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, height)
        outside = (clipped[:, 2] <= clipped[:, 0]) | (clipped[:, 3] <= clipped[:, 1])
        if outside.any():
            bad = boxes[outside][0].tolist()
            raise JsonBoxesError(self.path, f"{where}: box {bad} lies outside the {width}x{height} frame")
        self.clipped += int((clipped != boxes).any(1).sum())
        return clipped.astype(np.float32)

    def _lookup(self, video: str):
        parts = Path(video).parts
        for key in ["/".join(parts[i:]) for i in range(len(parts))] + [video, Path(video).stem]:
            if key in self.videos:
                return self.videos[key]
        raise JsonBoxesError(self.path, f"no boxes for video {video!r}")

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        if video is None or times is None or len(times) != len(frames):
            raise JsonBoxesError(self.path, "json boxes need video= and one time per frame (times=)")
        listed, boxes, width, height = self._lookup(str(video))
        if not len(listed):
            raise JsonBoxesError(self.path, f"video {video!r} lists no frames")
        t = np.asarray(times, np.float64)
        nearest = np.abs(listed[None, :] - t[:, None]).argmin(1)
        off = np.abs(listed[nearest] - t)
        if (off > self.tolerance).any():
            bad = t[off > self.tolerance][0]
            raise JsonBoxesError(
                self.path, f"video {video!r} has no frame within {self.tolerance} s of t={bad:.3f}"
            )
        sx, sy = frames.shape[2] / width, frames.shape[1] / height
        scale = np.array([sx, sy, sx, sy, 1.0, 1.0], np.float32)
        return [boxes[i] * scale[: boxes[i].shape[1]] for i in nearest]


def write_boxes_json(
    path: str | Path,
    videos: dict[str, tuple[int, int, Sequence[float], Sequence[np.ndarray]]],
    detector: str = "",
) -> None:
    """Save boxes for :class:`JsonBoxDetector`: ``{video: (width, height, times, boxes_per_frame)}``.
    Written to a temporary name and renamed."""
    doc = {"format": JSON_BOXES_FORMAT, "detector": detector, "videos": {}}
    for key, (width, height, times, boxes) in videos.items():
        frames = [{"t": float(t), "boxes": as_boxes(b).round(2).tolist()} for t, b in zip(times, boxes)]
        doc["videos"][key] = {"width": int(width), "height": int(height), "frames": frames}
    atomic_write(path, json.dumps(doc))
