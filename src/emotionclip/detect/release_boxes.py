"""The release's own YOLOv7 box files, read as they are (``release-boxes:PATH``).

The EmotionCLIP release ships person boxes computed by ``preprocessing/yolo_additions/detect_human.py``:

* a split file, ``{split}_human_boxes.json`` (MELD) or ``all_human_boxes.json`` (MovieGraphs):
  ``{"<clip or movie id>": {"frame_<k>.jpg": [[x1, y1, x2, y2, score], ...], ...}, ...}``;
* per-video files, ``<video>/human_boxes.json`` (LIRIS-ACCEDE's ``bboxes/<movie>.mp4/``, the
  training videos): ``[{"00000001.jpg": [[...], ...]}, {"00000002.jpg": []}, ...]``.

PATH is one such file, or a folder holding split files and/or per-video folders. MELD's splits reuse
clip ids (``dia0_utt0`` is in all three): an id found in several split files is taken from the one
whose split name is a word of the video's nearest folder naming one (``train`` in ``train_splits/``,
``dev`` in ``dev_splits_complete/``, ``test`` in ``output_repeated_splits_test/``).

Boxes are in pixels of YOLOv7's 640 letterbox (the frame scaled to fit 640, padded to a multiple of
32 on the short side). The release maps them onto a frame of size ``(W, H)`` with its
``get_correct_bbox``: divide by ``r = min(640 / W, 640 / H)``, floor the top-left, ceil the
bottom-right, clamp to the frame; the letterbox pad is not removed, so its masks sit up to half the
pad lower (or further right) than the people (8 px at 256 px for 16:9 footage). This reader returns
exactly those boxes, in pixels of the frames passed to :meth:`detect`, so ``boxes_to_mask`` of them
is the release's ``bbox_to_mask`` (scores > 0.5 kept) on frames of that size. ``unpad`` removes the
pad (YOLO's own ``scale_coords``) for boxes where the people are.

Frame names tell which frame a box belongs to:

* ``frame_<k>.jpg`` (MELD, MovieGraphs): frame ``k`` of the video, counted from 0 at its own frame
  rate (probed from the video file, or ``fps=``); a time ``t`` asks for ``k = floor(t * fps)``;
* ``<n>.jpg`` with digits only (LIRIS-ACCEDE at 1 fps, the training videos at 8 fps): ffmpeg's
  frame dump, numbered from 1 at ``fps`` frames per second, so ``n = round(t * fps) + 1``; the rate
  is not in the file and must be given (``release-boxes:PATH,fps=1``).

A frame the file does not list is an error (YOLO wrote an entry, maybe empty, for every frame).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .._io import FileError
from .base import PersonDetector, _check_frames, _empty_boxes

YOLO_SIZE = 640  # detect_human.py's --img-size
YOLO_STRIDE = 32  # YOLOv7's largest stride: the letterbox pads the short side to a multiple of it
PER_VIDEO_FILE = "human_boxes.json"
SPLIT_SUFFIX = "_human_boxes.json"  # {split}_human_boxes.json, all_human_boxes.json

_FRAME_NAME = re.compile(r"^frame_(\d+)(\.\w+)$")
_DUMP_NAME = re.compile(r"^(\d+)(\.\w+)$")


class ReleaseBoxesError(FileError, ValueError):
    """A release box file is malformed or lacks a frame; the message starts with its path."""


def parse_spec(arg: str) -> tuple[str, dict]:
    """``PATH[,fps=R][,unpad]`` -> (PATH, keyword arguments). A path that exists is taken whole
    (commas and all)."""
    if Path(arg).exists() or "," not in arg:
        return arg, {}
    path, *options = arg.split(",")
    kw: dict = {}
    for opt in options:
        name, sep, value = opt.partition("=")
        name = name.strip()
        if name == "unpad" and not sep:
            kw["unpad"] = True
        elif name == "fps" and sep:
            try:
                kw["fps"] = float(value)
            except ValueError:
                raise ValueError(f"release-boxes:{arg}: fps={value!r} is not a number") from None
        else:
            raise ValueError(f"release-boxes:{arg}: unknown option {opt!r} (use fps=R and/or unpad)")
    return path, kw


class ReleaseBoxDetector(PersonDetector):
    """Boxes from the release's YOLOv7 files, mapped onto frames as the release maps them (module doc).

    ``fps``: the rate frame names count at (required for ``00000001.jpg`` dumps; for ``frame_<k>.jpg``
    the video's own rate is probed when not given). ``unpad``: remove the letterbox pad the release
    leaves in (boxes where the people are, no longer the release's masks).
    """

    def __init__(self, path: str | Path, fps: float | None = None, unpad: bool = False):
        self.path = Path(path)
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"release-boxes:{self.path}: fps must be a positive number, got {fps}")
        self.fps, self.unpad = fps, unpad
        self.name = (
            f"release-boxes:{self.path}" + (f",fps={fps:g}" if fps else "") + (",unpad" if unpad else "")
        )
        # key -> [(split, frames or the per-video file to read)]: MELD's splits reuse clip ids
        self._videos: dict[str, list[tuple[str, dict[str, list] | Path]]] = {}
        self._rates: dict[str, float] = {}
        if self.path.is_dir():
            for file in sorted(self.path.glob(f"*{SPLIT_SUFFIX}")):
                self._add_split_file(file)
            for file in sorted(self.path.glob(f"*/{PER_VIDEO_FILE}")):
                self._videos.setdefault(file.parent.name, []).append(("", file))
            if not self._videos:
                raise ReleaseBoxesError(
                    self.path, f"no *{SPLIT_SUFFIX} or <video>/{PER_VIDEO_FILE} in this folder"
                )
        elif self.path.is_file():
            data = self._read(self.path)
            if isinstance(data, list):  # one video's file: the folder names the video
                self._videos[self.path.parent.name] = [("", self._per_video(self.path, data))]
            else:
                self._add_split_file(self.path, data)
        else:
            raise FileNotFoundError(f"{self.path}: release box file or folder not found")

    def _add_split_file(self, path: Path, data=None) -> None:
        data = self._read(path) if data is None else data
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ReleaseBoxesError(
                path, "expected the release's {video: {frame name: boxes}} or [{frame name: boxes}, ...]"
            )
        split = path.name[: -len(SPLIT_SUFFIX)] if path.name.endswith(SPLIT_SUFFIX) else ""
        for key, frames in data.items():
            self._videos.setdefault(key, []).append((split, frames))

    @staticmethod
    def _read(path: Path):
        try:
            return json.loads(path.read_bytes())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ReleaseBoxesError(path, f"not valid JSON ({e})") from e

    @staticmethod
    def _per_video(path: Path, data) -> dict[str, list]:
        if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
            raise ReleaseBoxesError(path, "expected a list of {frame name: boxes} (detect_human.py's output)")
        return {name: boxes for d in data for name, boxes in d.items()}

    def _frames_of(self, video: str) -> tuple[str, dict[str, list]]:
        p = Path(video)
        for key in (p.name, p.stem, video):
            if key in self._videos:
                break
        else:
            stems = {Path(k).stem: k for k in self._videos}  # LIRIS folders are named "<movie>.mp4"
            if p.stem not in stems:
                raise ReleaseBoxesError(self.path, f"no boxes for video {video!r}")
            key = stems[p.stem]
        entries = self._videos[key]
        if len(entries) > 1:  # the same id in several split files: the split its nearest folder names
            for folder in reversed(p.parent.parts):
                words = set(re.split(r"[^a-z0-9]+", folder.lower()))
                named = [e for e in entries if e[0] and e[0].lower() in words]
                if len(named) == 1:
                    entries = named
                    break
            if len(entries) != 1:
                splits = ", ".join(e[0] for e in self._videos[key])
                raise ReleaseBoxesError(
                    self.path,
                    f"video {video!r}: {key!r} is in several split files ({splits}) and no folder of the video "
                    "names exactly one of them; pass that split's file",
                )
        split, entry = entries[0]
        if isinstance(entry, Path):
            entry = self._per_video(entry, self._read(entry))
            self._videos[key] = [(split, entry)]
        return key, entry

    def _namer(self, key: str, frames: dict[str, list], video: str):
        """time -> frame name, from the naming the file uses."""
        sample = next(iter(frames), None)
        if sample is None:
            raise ReleaseBoxesError(self.path, f"video {key!r} lists no frames")
        if m := _FRAME_NAME.match(sample):
            ext = m.group(2)
            rate = self.fps or self._video_rate(video)
            return lambda t: f"frame_{int(math.floor(t * rate + 1e-6))}{ext}"
        if m := _DUMP_NAME.match(sample):
            width, ext = len(m.group(1)), m.group(2)
            if not self.fps:
                raise ReleaseBoxesError(
                    self.path,
                    f"video {key!r}: frames named like {sample!r} are a dump at a fixed rate the file does not "
                    "say; give it: release-boxes:PATH,fps=R (1 for LIRIS-ACCEDE, 8 for the training videos)",
                )
            rate = self.fps
            return lambda t: f"{int(round(t * rate)) + 1:0{width}d}{ext}"
        raise ReleaseBoxesError(
            self.path, f"video {key!r}: frame name {sample!r} is neither frame_<k>.jpg nor <n>.jpg"
        )

    def _video_rate(self, video: str) -> float:
        if video not in self._rates:
            from ..video_io import probe_video

            rate = probe_video(video).fps
            if not rate > 0:
                raise ReleaseBoxesError(
                    self.path, f"{video}: frame rate unknown; give release-boxes:PATH,fps=R"
                )
            self._rates[video] = rate
        return self._rates[video]

    def _boxes(self, raw, where: str) -> np.ndarray:
        try:
            b = np.asarray(raw, np.float64).reshape(-1, 5) if len(raw) else _empty_boxes()
        except (TypeError, ValueError) as e:
            raise ReleaseBoxesError(
                self.path, f"{where}: boxes are not [[x1, y1, x2, y2, score], ...] ({e})"
            ) from e
        if not np.isfinite(b).all():
            raise ReleaseBoxesError(self.path, f"{where}: a box is not finite")
        return b

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        if video is None or times is None or len(times) != len(frames):
            raise ReleaseBoxesError(self.path, "release boxes need video= and one time per frame (times=)")
        key, listed = self._frames_of(str(video))
        name_of = self._namer(key, listed, str(video))
        height, width = frames.shape[1:3]
        out = []
        for t in times:
            name = name_of(float(t))
            if name not in listed:
                raise ReleaseBoxesError(
                    self.path, f"video {key!r} has no frame {name!r} (t={float(t):.3f} s)"
                )
            out.append(
                release_frame_boxes(self._boxes(listed[name], f"{key}/{name}"), width, height, self.unpad)
            )
        return out


def letterbox_geometry(width: int, height: int, size: int = YOLO_SIZE, stride: int = YOLO_STRIDE):
    """YOLOv7's ``letterbox(auto=True)`` of a ``width x height`` frame: the scale ``r``, the scaled
    size and the left/top pad in letterbox pixels."""
    r = min(size / width, size / height)
    new_w, new_h = int(round(width * r)), int(round(height * r))
    dw, dh = ((size - new_w) % stride) / 2, ((size - new_h) % stride) / 2
    return r, (new_w, new_h), (int(round(dw - 0.1)), int(round(dh - 0.1)))


def release_frame_boxes(boxes: np.ndarray, width: int, height: int, unpad: bool = False) -> np.ndarray:
    """One frame's YOLO letterbox boxes ``[K, 5]`` -> boxes in pixels of a ``width x height`` frame:
    the release's ``get_correct_bbox`` (``unpad=False``) or with the letterbox pad removed."""
    b = np.asarray(boxes, np.float64).reshape(-1, 5)
    r, (new_w, new_h), (left, top) = letterbox_geometry(width, height)
    if unpad:
        sx, sy = new_w / width, new_h / height
        x1, x2 = (b[:, 0] - left) / sx, (b[:, 2] - left) / sx
        y1, y2 = (b[:, 1] - top) / sy, (b[:, 3] - top) / sy
    else:
        x1, y1, x2, y2 = b[:, 0] / r, b[:, 1] / r, b[:, 2] / r, b[:, 3] / r
    out = np.stack(
        [
            np.maximum(np.floor(x1), 0),
            np.maximum(np.floor(y1), 0),
            np.minimum(np.ceil(x2), width),
            np.minimum(np.ceil(y2), height),
            b[:, 4],
        ],
        1,
    )
    return out.astype(np.float32)
