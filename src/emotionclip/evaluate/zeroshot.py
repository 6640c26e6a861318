"""Zero-shot scoring: class names x prompt templates -> averaged, normalised text embeddings.

``scores = softmax(exp(logit_scale) * normalize(visual) @ classifier.T)`` for each video or image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ..heads import (
    DEFAULT_TEMPLATES,
    VOCABULARIES,
    check_class_names,
    top_emotions,
    zero_shot_classifier,
    zero_shot_scores,
)
from ..video_io import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS
from .datasets.common import Sample


def input_samples(paths: Sequence[str | Path], detect: bool) -> list[Sample]:
    """One sample per video (the whole clip) or image file."""
    samples = []
    for p in paths:
        suffix = Path(p).suffix.lower()
        if suffix not in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS:
            raise ValueError(f"{p}: not a video or image file (extension {suffix or 'missing'})")
        kind = "image" if suffix in IMAGE_EXTENSIONS else "video"
        samples.append(Sample(key=str(p), path=str(p), labels={}, kind=kind, detect=detect))
    return samples


def zero_shot(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    class_names: Sequence[str] | None = None,
    templates: Sequence[str] | None = None,
    *,
    detector: str | None = None,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 8,
    backend: str | None = None,
) -> dict:
    """Zero-shot class probabilities for each video / image.

    Returns ``{"classes", "templates", "results": [{"path", "top", "scores": {class: p}}], "failed"}``;
    ``top`` is "" where no class dominates (:func:`emotionclip.heads.top_emotions`).
    """
    from .features import extract_features
    from .run import build_runner, default_protocol, no_detector

    class_names = list(VOCABULARIES["basic"]) if class_names is None else list(class_names)
    check_class_names(class_names)  # before the model loads
    templates = list(templates or DEFAULT_TEMPLATES)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    runner, precision, backend = build_runner(checkpoint, dev, backend, precision)
    classifier = zero_shot_classifier(runner, class_names, templates)
    det = None
    if no_detector(detector):
        from ..detect import resolve_detector

        det = resolve_detector(detector, device=dev)
    protocol = default_protocol(
        runner.video_len,
        runner.image_size,
        det.name if det else None,
        precision,
        backend,
    )
    feats = extract_features(
        runner,
        input_samples(inputs, det is not None),
        protocol,
        detector=det,
        batch_size=batch_size,
        desc="zero-shot",
    )
    probs = (
        zero_shot_scores(feats.features, classifier, float(runner.logit_scale.detach().exp()))
        if feats.keys
        else []
    )
    # "top" is "" where the best class leads the second by < DOMINANCE_MARGIN: no label from flat scores
    tops = top_emotions(probs, class_names) if feats.keys else []
    results = [
        {
            "path": k,
            "top": str(top),
            "scores": dict(zip(class_names, map(float, p), strict=True)),
        }
        for k, p, top in zip(feats.keys, probs, tops, strict=True)
    ]
    return {"classes": class_names, "templates": templates, "results": results, "failed": feats.failed}
