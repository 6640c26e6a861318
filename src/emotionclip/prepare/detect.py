"""Subject boxes: who is in a frame, as ``[K, 5]`` float32 ``(x1, y1, x2, y2, score)`` per frame.

Three detectors behind one interface (:func:`get_detector`):

* ``"default"`` / ``"blazeface"``: MediaPipe's BlazeFace full-range face detector (TFLite, shipped
  in ``assets/``, run with ``ai-edge-litert`` on the CPU, no download). Each face box is widened to a
  head-and-upper-body subject box. Finds people whose face is visible; a person seen from behind is
  missed (see ``notes/detect_README.md`` for measured quality).
* ``"torchvision"`` / ``"torchvision:ARCH"``: a COCO person detector from torchvision (Faster R-CNN,
  RetinaNet, FCOS, SSD); weights from torchvision's own download or ``weights_path=``.
* ``"json:PATH"``: boxes computed elsewhere, read from a JSON file (schema in :class:`JsonBoxDetector`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from .._io import atomic_write

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
BLAZEFACE_MODEL = ASSETS / "face_detection_full_range.tflite"
JSON_BOXES_FORMAT = "emotionclip-boxes/1"


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


# ---------------------------------------------------------------------------------------------------
# default: BlazeFace full-range (MediaPipe) + subject-box expansion


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
        score_threshold: float = 0.5,
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
            crop = x[:, :, y0 : min(h, y0 + side), x0 : min(w, x0 + side)].contiguous(memory_format=torch.channels_last)
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
            [x0 + (cx - bw / 2) * side, y0 + (cy - bh / 2) * side, x0 + (cx + bw / 2) * side, y0 + (cy + bh / 2) * side],
            -1,
        )  # [N, V, A, 4]

        # one NMS over all frames and views (batched by frame), then face -> subject box
        keep = score > self.score_threshold
        frame_idx = np.broadcast_to(np.arange(n)[:, None, None], keep.shape)[keep]
        cand = np.concatenate([boxes[keep], score[keep][:, None]], 1).astype(np.float32)
        cand_t = torch.from_numpy(cand)
        kept = torchvision.ops.batched_nms(cand_t[:, :4], cand_t[:, 4], torch.from_numpy(frame_idx), self.nms_iou).numpy()
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


# ---------------------------------------------------------------------------------------------------
# torchvision COCO detectors

TORCHVISION_ARCHS = (
    "fasterrcnn_resnet50_fpn_v2",
    "fasterrcnn_resnet50_fpn",
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "retinanet_resnet50_fpn_v2",
    "retinanet_resnet50_fpn",
    "fcos_resnet50_fpn",
    "ssdlite320_mobilenet_v3_large",
    "ssd300_vgg16",
)
COCO_PERSON = 1  # torchvision's COCO detectors use the 91-id category list; 1 = person


def _load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector weights file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: could not read detector weights ({e})") from e
    if isinstance(sd, dict) and "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]  # torchvision reference-training checkpoints wrap the state dict
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"{path}: expected a state dict (name -> tensor)")
    return sd


class TorchvisionPersonDetector(PersonDetector):
    """COCO person boxes from a torchvision detection model.

    ``weights_path=None`` uses torchvision's default COCO weights for ``arch`` (downloaded once into
    the torch hub cache); otherwise a local state dict (``.pth``/``.pt`` via ``torch.load(weights_only=True)``
    or ``.safetensors``) for the same architecture with 91 COCO classes.
    """

    def __init__(
        self,
        arch: str = "fasterrcnn_resnet50_fpn_v2",
        weights_path: str | Path | None = None,
        device: str | torch.device = "cpu",
        score_threshold: float = 0.5,
        batch_size: int = 4,
    ):
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"unknown torchvision detector {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
        builder = getattr(torchvision.models.detection, arch)
        if weights_path is None:
            weights = torchvision.models.get_model_weights(builder).DEFAULT
            logger.info("loading torchvision %s weights %s", arch, weights)
            model = builder(weights=weights)
        else:
            path = Path(weights_path)
            sd = _load_state_dict(path)
            model = builder(weights=None, weights_backbone=None, num_classes=91)
            try:
                model.load_state_dict(sd)
            except RuntimeError as e:
                raise ValueError(f"{path}: weights do not fit torchvision {arch} ({str(e).splitlines()[0]})") from e
        self.arch = arch
        self.device = torch.device(device)
        self.model = model.eval().to(self.device)
        self.score_threshold = score_threshold
        self.batch_size = batch_size
        self.name = f"torchvision:{arch}"

    @torch.inference_mode()
    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        out: list[np.ndarray] = []
        for i in range(0, len(frames), self.batch_size):
            batch = torch.from_numpy(frames[i : i + self.batch_size]).to(self.device)
            images = list(batch.permute(0, 3, 1, 2).float().div_(255))
            for pred in self.model(images):
                keep = (pred["labels"] == COCO_PERSON) & (pred["scores"] >= self.score_threshold)
                boxes = torch.cat([pred["boxes"][keep], pred["scores"][keep, None]], 1)
                out.append(boxes.float().cpu().numpy())
        return out


# ---------------------------------------------------------------------------------------------------
# precomputed boxes


class JsonBoxDetector(PersonDetector):
    """Boxes read from a JSON file instead of computed. Schema (``format`` = ``emotionclip-boxes/1``)::

        {"format": "emotionclip-boxes/1",
         "detector": "what made them (free text, optional)",
         "videos": {
           "<video key>": {
             "width": 640, "height": 480,      # frame size the boxes are in pixels of
             "fps": 25.0,                      # only needed when frames are given by "frame"
             "frames": [
               {"t": 0.125, "boxes": [[x1, y1, x2, y2, score], ...]},   # t = seconds in the video
               {"frame": 7, "boxes": []},                               # or the frame index (t = frame / fps)
               ...]}}}

    A video key matches the ``video`` passed to :meth:`detect` when it is a trailing part of its path
    (``clips/a.mp4`` and ``a.mp4`` both match ``/data/clips/a.mp4``) or its stem (``a``). Each requested time takes the listed frame nearest to it within
    ``tolerance`` seconds (default 0.0625, half a frame at 8 fps); boxes are rescaled to the size of
    the frames passed in. A listed frame with ``"boxes": []`` means nobody; a video or time that is
    not listed is an error (the file does not say whether anyone is there).
    """

    def __init__(self, path: str | Path, tolerance: float = 0.0625):
        self.path = Path(path)
        self.tolerance = tolerance
        self.name = f"json:{self.path}"
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: boxes JSON not found")
        try:
            data = json.loads(self.path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{self.path}: not valid JSON ({e})") from e
        if not isinstance(data, dict) or data.get("format") != JSON_BOXES_FORMAT or not isinstance(data.get("videos"), dict):
            raise ValueError(f"{self.path}: expected {{'format': '{JSON_BOXES_FORMAT}', 'videos': {{...}}}}")
        self.videos = {key: self._parse_video(key, v) for key, v in data["videos"].items()}

    def _parse_video(self, key: str, v: dict) -> tuple[np.ndarray, list[np.ndarray], int, int]:
        where = f"{self.path}: video {key!r}"
        try:
            width, height = int(v["width"]), int(v["height"])
            times, boxes = [], []
            for f in v["frames"]:
                t = float(f["t"]) if "t" in f else int(f["frame"]) / float(v["fps"])
                b = np.asarray(f["boxes"], np.float32).reshape(-1, 5) if f["boxes"] else _empty_boxes()
                times.append(t)
                boxes.append(b)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: malformed entry ({type(e).__name__}: {e}); see JsonBoxDetector docs") from e
        order = np.argsort(times)
        return np.asarray(times)[order], [boxes[i] for i in order], width, height

    def _lookup(self, video: str):
        parts = Path(video).parts
        for key in ["/".join(parts[i:]) for i in range(len(parts))] + [video, Path(video).stem]:
            if key in self.videos:
                return self.videos[key]
        raise KeyError(f"{self.path}: no boxes for video {video!r}")

    def detect(self, frames, *, video=None, times=None) -> list[np.ndarray]:
        frames = _check_frames(frames)
        if video is None or times is None or len(times) != len(frames):
            raise ValueError(f"{self.path}: json boxes need video= and one time per frame (times=)")
        listed, boxes, width, height = self._lookup(str(video))
        if not len(listed):
            raise KeyError(f"{self.path}: video {video!r} lists no frames")
        t = np.asarray(times, np.float64)
        nearest = np.abs(listed[None, :] - t[:, None]).argmin(1)
        off = np.abs(listed[nearest] - t)
        if (off > self.tolerance).any():
            bad = t[off > self.tolerance][0]
            raise KeyError(f"{self.path}: video {video!r} has no frame within {self.tolerance} s of t={bad:.3f}")
        sx, sy = frames.shape[2] / width, frames.shape[1] / height
        scale = np.array([sx, sy, sx, sy, 1.0], np.float32)
        return [boxes[i] * scale for i in nearest]


def write_boxes_json(
    path: str | Path,
    videos: dict[str, tuple[int, int, Sequence[float], Sequence[np.ndarray]]],
    detector: str = "",
) -> None:
    """Save boxes for :class:`JsonBoxDetector`: ``{video: (width, height, times, boxes_per_frame)}``.
    Written to a temporary name and renamed."""
    doc = {"format": JSON_BOXES_FORMAT, "detector": detector, "videos": {}}
    for key, (width, height, times, boxes) in videos.items():
        frames = [{"t": float(t), "boxes": np.asarray(b, np.float32).reshape(-1, 5).round(2).tolist()} for t, b in zip(times, boxes)]
        doc["videos"][key] = {"width": int(width), "height": int(height), "frames": frames}
    atomic_write(path, json.dumps(doc))


def get_detector(name: str = "default", **kw) -> PersonDetector:
    """``"default"``/``"blazeface"`` | ``"torchvision"``/``"torchvision:ARCH"`` | ``"json:PATH"``.
    Keyword arguments go to the detector's constructor (e.g. ``weights_path=``, ``device=``)."""
    if name in ("default", "blazeface"):
        return BlazeFaceSubjectDetector(**kw)
    if name == "torchvision" or name.startswith("torchvision:"):
        arch = name.partition(":")[2] or kw.pop("arch", TORCHVISION_ARCHS[0])
        return TorchvisionPersonDetector(arch, **kw)
    if name.startswith("json:"):
        return JsonBoxDetector(name[len("json:") :], **kw)
    raise ValueError(f"unknown person detector {name!r}; use 'default', 'torchvision[:ARCH]' or 'json:PATH'")
