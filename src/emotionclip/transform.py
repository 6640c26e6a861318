"""Pixels and subject masks, transformed together.

The released model was trained on frames resized to short side 256 (bicubic), cropped to 224
(when training, a random crop drawn for each frame independently — the release's
``_preprocess_frames(..., consistent=False)``; centre crop otherwise) and normalised with ImageNet
statistics, not CLIP's. The subject mask goes through exactly the same geometry (nearest-neighbour
resize, the frame's crop window) so that it keeps marking the same pixels.

How a model wants its frames (:class:`PreprocessConfig`) is part of its config and is saved with
it, as open_clip's ``preprocess_cfg`` and timm's ``pretrained_cfg`` are: :func:`model_transform`
reads it, so no caller recomputes sizes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

from emotionclip.constants import BOX_SCORE_THRESHOLD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INTERPOLATIONS = {
    "bicubic": InterpolationMode.BICUBIC,
    "bilinear": InterpolationMode.BILINEAR,
    "nearest": InterpolationMode.NEAREST,
}


@dataclass(frozen=True)
class PreprocessConfig:
    """How frames are prepared for a model (saved with it). Defaults are the release's."""

    crop_size: int = 224  # square crop, equal to the vision tower's input size
    resize: int = 256  # short side before the crop
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    box_score_threshold: float = BOX_SCORE_THRESHOLD  # person boxes above it make the subject

    def __post_init__(self):
        # JSON gives lists; keep tuples so that configs compare equal after a round trip
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {self.interpolation!r}"
            )
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values (std > 0), got {self.mean} and {self.std}")
        if not 0 < self.crop_size <= self.resize:
            raise ValueError(f"need 0 < crop_size <= resize, got {self.crop_size} and {self.resize}")

    @classmethod
    def for_crop(cls, crop_size: int, **kw: Any) -> PreprocessConfig:
        """The release's recipe at another input size: the 256/224 resize ratio is kept."""
        return cls(crop_size=crop_size, resize=round(crop_size * 256 / 224), **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PreprocessConfig:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocess keys {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


CROPS = ("frame", "clip")  # training crop drawn per frame (the release) or once per clip


def normalize_frames(
    pixels: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """uint8 ``[..., 3, H, W]`` → float32 normalised, on the tensor's device (the training loader
    ships uint8 so that batches are 4x smaller in shared and pinned memory)."""
    shape = (3, 1, 1)
    m = torch.tensor(mean, device=pixels.device).view(shape)
    s = torch.tensor(std, device=pixels.device).view(shape)
    return (pixels.float().div_(255.0) - m) / s


def boxes_to_mask(
    boxes: np.ndarray | Sequence[Sequence[float]] | None,
    height: int,
    width: int,
    score_threshold: float = BOX_SCORE_THRESHOLD,
) -> np.ndarray:
    """Binary subject mask ``uint8[height, width]``: 1 inside any box ``(x1, y1, x2, y2[, score])``.

    Boxes are in pixel coordinates of the frame; a box with a score keeps only when
    ``score > score_threshold``. Boxes are clipped to the frame.
    """
    mask = np.zeros((height, width), dtype=np.uint8)
    if boxes is None:
        return mask
    b = np.asarray(boxes, dtype=np.float32)
    if b.size == 0:
        return mask
    b = b[None] if b.ndim == 1 else b
    if b.ndim != 2 or b.shape[1] not in (4, 5, 6):
        raise ValueError(
            f"boxes must be [K, 4], [K, 5] or [K, 6] (x1, y1, x2, y2[, score[, track]]), got {list(b.shape)}"
        )
    if not np.isfinite(b).all():
        raise ValueError("boxes contain NaN or infinite coordinates")
    if b.shape[1] >= 5:
        b = b[b[:, 4] > score_threshold]
    x1 = np.clip(np.rint(b[:, 0]), 0, width).astype(int)
    x2 = np.clip(np.rint(b[:, 2]), 0, width).astype(int)
    y1 = np.clip(np.rint(b[:, 1]), 0, height).astype(int)
    y2 = np.clip(np.rint(b[:, 3]), 0, height).astype(int)
    for c0, r0, c1, r1 in zip(x1, y1, x2, y2):  # a handful of boxes; slicing does the pixels
        mask[r0:r1, c0:c1] = 1
    return mask


def boxes_to_masks(
    boxes_per_frame: Sequence[np.ndarray | None],
    height: int,
    width: int,
    score_threshold: float = BOX_SCORE_THRESHOLD,
) -> np.ndarray:
    """``uint8[T, height, width]`` from one box array per frame."""
    return np.stack([boxes_to_mask(b, height, width, score_threshold) for b in boxes_per_frame])


def _to_tchw(frames) -> tuple[torch.Tensor, bool]:
    x = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
    single = x.ndim == 3
    if single:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be [T, H, W, 3] or [H, W, 3] RGB, got shape {list(x.shape)}")
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {x.dtype}")
    return x.permute(0, 3, 1, 2), single


class FrameTransform:
    """Frames ``uint8 [T, H, W, 3]`` (+ masks ``[T, H, W]``) → model input.

    Returns ``(pixels float32 [T, 3, S, S], mask uint8 [T, S, S] | None)``; a single frame
    ``[H, W, 3]`` gives ``[3, S, S]`` and ``[S, S]``. With ``train=True`` a random crop window is
    drawn for every frame (``crop="frame"``, the release) or once per call (``crop="clip"``) and
    applied to the frame and its mask; otherwise the centre crop. ``normalize=False`` returns the
    cropped uint8 pixels (normalise later with :func:`normalize_frames`).
    """

    def __init__(
        self,
        image_size: int = 224,
        resize: int = 256,
        train: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        generator: torch.Generator | None = None,
        interpolation: str = "bicubic",
        box_score_threshold: float = BOX_SCORE_THRESHOLD,
        crop: str = "frame",
        normalize: bool = True,
    ):
        if resize < image_size:
            raise ValueError(f"resize ({resize}) must be >= image_size ({image_size})")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {sorted(INTERPOLATIONS)}, got {interpolation!r}")
        if crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
        self.crop = crop
        self.normalize = normalize
        self.mean_values, self.std_values = tuple(mean), tuple(std)
        self.image_size = image_size
        self.resize = resize
        self.train = train
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.generator = generator
        self.interpolation = interpolation
        self.box_score_threshold = box_score_threshold

    @classmethod
    def from_config(
        cls,
        cfg: PreprocessConfig,
        train: bool = False,
        generator: torch.Generator | None = None,
        crop: str = "frame",
        normalize: bool = True,
    ) -> FrameTransform:
        return cls(
            image_size=cfg.crop_size,
            resize=cfg.resize,
            train=train,
            mean=cfg.mean,
            std=cfg.std,
            generator=generator,
            interpolation=cfg.interpolation,
            box_score_threshold=cfg.box_score_threshold,
            crop=crop,
            normalize=normalize,
        )

    def masks_from_boxes(self, boxes_per_frame: Sequence[np.ndarray | None], height: int, width: int):
        """Subject masks ``uint8[T, height, width]`` with this model's box-score threshold."""
        return boxes_to_masks(boxes_per_frame, height, width, self.box_score_threshold)

    def _size(self, h: int, w: int) -> tuple[int, int]:
        # short side -> resize, long side scaled and truncated (torchvision's Resize(int) rule)
        if h <= w:
            return self.resize, int(self.resize * w / h)
        return int(self.resize * h / w), self.resize

    def _crop_origin(self, h: int, w: int) -> tuple[int, int]:
        s = self.image_size
        if self.train:
            top = int(torch.randint(0, h - s + 1, (1,), generator=self.generator))
            left = int(torch.randint(0, w - s + 1, (1,), generator=self.generator))
            return top, left
        return int(round((h - s) / 2.0)), int(round((w - s) / 2.0))

    def __call__(self, frames, masks=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, single = _to_tchw(frames)
        h, w = x.shape[-2:]
        m = None
        if masks is not None:
            m = torch.as_tensor(np.asarray(masks) if not torch.is_tensor(masks) else masks)
            m = m[None] if m.ndim == 2 else m
            if tuple(m.shape) != (x.shape[0], h, w):
                raise ValueError(f"mask shape {list(m.shape)} does not match frames {[x.shape[0], h, w]}")
            m = (m != 0).to(torch.uint8)
        nh, nw = self._size(h, w)
        if (nh, nw) != (h, w):
            x = TF.resize(x, [nh, nw], interpolation=INTERPOLATIONS[self.interpolation], antialias=True)
            if m is not None:
                m = TF.resize(m[:, None], [nh, nw], interpolation=InterpolationMode.NEAREST)[:, 0]
        s = self.image_size
        per_frame = self.train and self.crop == "frame" and x.shape[0] > 1
        origins = [self._crop_origin(nh, nw) for _ in range(x.shape[0] if per_frame else 1)]
        if per_frame:
            x = torch.stack([f[:, y : y + s, z : z + s] for f, (y, z) in zip(x, origins, strict=True)])
            if m is not None:
                m = torch.stack([f[y : y + s, z : z + s] for f, (y, z) in zip(m, origins, strict=True)])
        else:
            top, left = origins[0]
            x = x[..., top : top + s, left : left + s]
            if m is not None:
                m = m[..., top : top + s, left : left + s].contiguous()
        if self.normalize:
            pixels = normalize_frames(x, self.mean_values, self.std_values)
        else:
            pixels = x.contiguous()
        if single:
            return pixels[0], (m[0] if m is not None else None)
        return pixels, m


def image_transform(image_size: int = 224, resize: int | None = None) -> FrameTransform:
    """Inference transform of the release: short side 256 bicubic, centre crop 224, ImageNet stats."""
    return video_transform(image_size, resize, train=False)


def video_transform(
    image_size: int = 224, resize: int | None = None, train: bool = False, crop: str = "frame"
) -> FrameTransform:
    """Video counterpart: centre crop, or when ``train`` a random crop per frame (the release) or
    per clip (``crop="clip"``). ``resize=None`` keeps the release's 256/224 ratio."""
    cfg = PreprocessConfig.for_crop(image_size)
    return FrameTransform(image_size=image_size, resize=resize or cfg.resize, train=train, crop=crop)


def model_transform(
    model, train: bool = False, generator: torch.Generator | None = None, crop: str = "frame"
) -> FrameTransform:
    """The frame transform saved with ``model`` (``model.config.preprocess``)."""
    return FrameTransform.from_config(model.config.preprocess, train=train, generator=generator, crop=crop)
