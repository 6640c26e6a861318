"""Person detection, shared by prepare, evaluate and analyze.

``resolve_detector(spec)`` turns a name into a detector:

* ``"default"`` / ``"movenet"``: MoveNet MultiPose person boxes, whole bodies, shipped ONNX model (:mod:`.movenet`);
* ``"nanodet"``: NanoDet COCO person boxes, shipped ONNX model (:mod:`.nanodet`; the default of 0.2);
* ``"faces"`` / ``"blazeface"``: BlazeFace faces widened to subject boxes (:mod:`.faces`);
* ``"torchvision"`` / ``"torchvision:ARCH"``: a COCO person detector (:mod:`.torchvision_coco`);
* ``"json:PATH"``: boxes computed elsewhere (:mod:`.json_boxes`);
* ``"release-boxes:PATH[,fps=R][,unpad]"``: the release's own YOLOv7 box files, mapped as it maps
  them (:mod:`.release_boxes`);
* ``"py:package.module:factory"``: a user's detector (anything with ``.detect(frames, video=, times=)``);
* ``"none"`` / ``None``: no detection (the subject token sees the whole frame).

Built detectors are cached per (spec, device): loading one costs more than running it on a frame.
``device="cuda[:N]"`` puts the detectors that have a GPU path (MoveNet, NanoDet: ONNX Runtime's CUDA
provider; torchvision: torch) on that GPU; the others run on the CPU, which is logged once.
"""

from __future__ import annotations

import logging
from typing import Any

from .. import registry
from .base import PersonDetector, as_boxes
from .track import BoxTracker, track_boxes


def _movenet(**kw):
    from .movenet import MoveNetPersonDetector

    return MoveNetPersonDetector(**kw)


def _nanodet(**kw):
    from .nanodet import NanoDetPersonDetector

    return NanoDetPersonDetector(**kw)


def _faces(**kw):
    from .faces import BlazeFaceSubjectDetector

    return BlazeFaceSubjectDetector(**kw)


def _torchvision(arch: str | None = None, **kw):
    from .torchvision_coco import TORCHVISION_ARCHS, TorchvisionPersonDetector

    return TorchvisionPersonDetector(arch or kw.pop("arch", TORCHVISION_ARCHS[0]), **kw)


def _json(path: str, **kw):
    from .json_boxes import JsonBoxDetector

    return JsonBoxDetector(path, **kw)


def _release_boxes(arg: str, **kw):
    from .release_boxes import ReleaseBoxDetector, parse_spec

    path, options = parse_spec(arg)
    return ReleaseBoxDetector(path, **{**options, **kw})


# name -> factory; "NAME:ARG" passes ARG to the factory
DETECTORS = {
    "default": _movenet,
    "movenet": _movenet,
    "nanodet": _nanodet,
    "faces": _faces,
    "blazeface": _faces,
    "torchvision": _torchvision,
    "json": _json,
    "release-boxes": _release_boxes,
}

# the names whose detectors take a ``device`` (the rest run on the CPU wherever the model runs)
ON_DEVICE = {"default", "movenet", "nanodet", "torchvision"}

_CACHE: dict[tuple[str, str | None], PersonDetector] = {}
logger = logging.getLogger(__name__)


def get_detector(spec: str = "default", **kw) -> PersonDetector:
    """A new detector for ``spec`` (see the module doc); keyword arguments go to its constructor."""
    return registry.resolve("person detector", spec, DETECTORS, **kw)


def resolve_detector(spec: Any, device: Any = None) -> PersonDetector | None:
    """``None``/``"none"`` -> None; a name -> the detector (built once per name and device); an object
    with ``.detect`` as it is. ``device`` (``cpu``, ``cuda``, ``cuda:1``, a torch.device) is where a
    named detector runs when it has a GPU path (:data:`ON_DEVICE`); the CPU otherwise."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        gpu = device is not None and str(device).startswith("cuda")
        name = spec.partition(":")[0]
        key = (spec, str(device) if gpu and name in ON_DEVICE else None)
        if key not in _CACHE:
            if gpu and name not in ON_DEVICE:
                logger.info("person detector %s has no GPU path: it runs on the CPU", spec)
            _CACHE[key] = get_detector(spec, **({"device": key[1]} if key[1] else {}))
        return _CACHE[key]
    if not callable(getattr(spec, "detect", None)):
        raise TypeError(f"detector must be a name or have .detect(frames), got {type(spec).__name__}")
    return spec


__all__ = [
    "DETECTORS",
    "ON_DEVICE",
    "BoxTracker",
    "PersonDetector",
    "as_boxes",
    "get_detector",
    "resolve_detector",
    "track_boxes",
]
