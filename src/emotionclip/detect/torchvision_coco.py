"""COCO person boxes from a torchvision detection model (weights from torchvision's download or a
local state dict)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torchvision

from ..constants import BOX_SCORE_THRESHOLD
from .base import PersonDetector, _check_frames

logger = logging.getLogger(__name__)

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
        score_threshold: float = BOX_SCORE_THRESHOLD,
        batch_size: int = 4,
    ):
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(
                f"unknown torchvision detector {arch!r}; choose one of {', '.join(TORCHVISION_ARCHS)}"
            )
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
                raise ValueError(
                    f"{path}: weights do not fit torchvision {arch} ({str(e).splitlines()[0]})"
                ) from e
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
