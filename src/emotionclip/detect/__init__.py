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

Built detectors are cached per spec: loading one costs more than running it on a frame.
"""

from __future__ import annotations

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

_CACHE: dict[str, PersonDetector] = {}


def get_detector(spec: str = "default", **kw) -> PersonDetector:
    """A new detector for ``spec`` (see the module doc); keyword arguments go to its constructor."""
    return registry.resolve("person detector", spec, DETECTORS, **kw)


def resolve_detector(spec: Any) -> PersonDetector | None:
    """``None``/``"none"`` -> None; a name -> the detector (built once per name); an object with
    ``.detect`` as it is."""
    if spec is None or spec == "none":
        return None
    if isinstance(spec, str):
        if spec not in _CACHE:
            _CACHE[spec] = get_detector(spec)
        return _CACHE[spec]
    if not callable(getattr(spec, "detect", None)):
        raise TypeError(f"detector must be a name or have .detect(frames), got {type(spec).__name__}")
    return spec


__all__ = [
    "DETECTORS",
    "BoxTracker",
    "PersonDetector",
    "as_boxes",
    "get_detector",
    "resolve_detector",
    "track_boxes",
]
