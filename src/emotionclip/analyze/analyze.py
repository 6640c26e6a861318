"""Emotions over time: window embeddings scored zero-shot over class names or by a linear probe."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..heads import check_class_names, check_head_or_classes, top_emotions
from .embed import VideoEmbedding, embed_video
from .table import EmotionTable, emotion_table

logger = logging.getLogger(__name__)

FIXED_COLUMNS = ("window", "start", "end", "has_person", "padded_frames", "boxes", "top_emotion")


@dataclass
class EmotionScorer:
    """Maps window features ``[N, D]`` to one score per class ``[N, C]``."""

    classes: tuple[str, ...]
    method: str  # "zero-shot" or "probe (<kind>)"
    dim: int  # feature size it expects
    score: Callable[[torch.Tensor], np.ndarray]
    probabilities: bool = True  # scores in [0, 1] (not so for a ridge probe)

    def __call__(self, features: torch.Tensor) -> np.ndarray:
        return np.asarray(self.score(features), dtype=np.float32)


def zero_shot_scorer(
    model, classes: Sequence[str] | None = None, device: str | torch.device | None = None
) -> EmotionScorer:
    """Softmax over class-name prompts (``emotionclip.heads``), at the model's temperature.

    ``model``: an EmotionCLIP (encoded on ``device``, default its own, never moved or switched to
    eval) or a backend object of ``load_model(..., backend=...)``.
    """
    from emotionclip.backends import as_inference_model
    from emotionclip.constants import SENTIMENT_CLASSES
    from emotionclip.heads import zero_shot_classifier, zero_shot_scores

    classes = SENTIMENT_CLASSES if classes is None else tuple(classes)
    check_classes(classes)
    classifier = zero_shot_classifier(as_inference_model(model, device), classes).cpu()
    scale = float(model.logit_scale.detach().exp())
    return EmotionScorer(
        classes, "zero-shot", classifier.shape[1], lambda f: zero_shot_scores(f, classifier, scale)
    )


def probe_scorer(head_path: str | Path) -> EmotionScorer:
    """A linear-probe head saved by ``emotionclip evaluate`` (a folder with head.safetensors + head.json)."""
    from emotionclip.heads import ProbeHead

    head = ProbeHead.load(head_path)
    try:
        check_classes(head.classes)
    except ValueError as e:
        raise ValueError(f"{head_path}: {e}") from None
    return EmotionScorer(
        head.classes, f"probe ({head.kind})", head.dim, head.predict, probabilities=head.kind != "ridge"
    )


def check_classes(classes: Sequence[str]) -> None:
    """Class names become table columns: at least one, none blank, none twice, none a fixed column."""
    check_class_names(classes)
    clash = [c for c in classes if c in FIXED_COLUMNS]
    if clash:
        raise ValueError(
            f"class names {', '.join(clash)} are reserved column names ({', '.join(FIXED_COLUMNS)})"
        )


@dataclass
class Analysis:
    table: pd.DataFrame
    embedding: VideoEmbedding
    scorer: EmotionScorer


def score_table(embedding: VideoEmbedding, scorer: EmotionScorer) -> pd.DataFrame:
    """One row per window: times, the subject boxes used, has_person, top emotion, one column per class."""
    if embedding.features.shape[1] != scorer.dim:
        raise ValueError(
            f"the {scorer.method} head expects {scorer.dim}-d features, "
            f"the model gives {embedding.features.shape[1]}-d"
        )
    probs = scorer(embedding.features)
    table = pd.DataFrame(
        {
            "window": np.arange(len(embedding.starts)),
            "start": embedding.starts.round(3),
            "end": embedding.ends.round(3),
            "has_person": embedding.has_person,
            "padded_frames": _padded(embedding),
            "boxes": [json.dumps([rounded_boxes(b) for b in frames]) for frames in embedding.boxes],
            "top_emotion": top_emotions(probs, scorer.classes, scorer.probabilities),
        }
    )
    return pd.concat([table, pd.DataFrame(probs, columns=list(scorer.classes))], axis=1)


def _padded(embedding: VideoEmbedding) -> np.ndarray:
    padded = embedding.padded
    return np.zeros(len(embedding.starts), np.int64) if padded is None else np.asarray(padded, np.int64)


def rounded_boxes(boxes: np.ndarray) -> list[list[float]]:
    b = np.asarray(boxes, np.float64)
    # scores rounded up: a box kept just above the 0.5 threshold must still read above it; track ids
    # (a sixth column, detect.track) as they are
    return np.concatenate([b[:, :4].round(1), np.ceil(b[:, 4:5] * 1000) / 1000, b[:, 5:]], axis=1).tolist()


def run_analysis(model, path: str | Path, scorer: EmotionScorer, **embed_kwargs) -> Analysis:
    embedding = embed_video(model, path, **embed_kwargs)
    return Analysis(score_table(embedding, scorer), embedding, scorer)


def analyze_video(
    model,
    path: str | Path,
    classes: Sequence[str] | None = None,
    head: str | Path | None = None,
    window: float = 2.0,
    stride: float = 1.0,
    **embed_kwargs,
) -> EmotionTable:
    """Emotion scores over time for one video, one row per window (see :func:`score_table`).

    Scores are zero-shot over ``classes`` (default: the 7 sentiment classes) unless ``head`` names
    a saved linear-probe head; other keywords (``detector``, ``batch_size``, ``device``,
    ``precision``) go to :func:`embed_video`.
    """
    check_head_or_classes(head, classes)
    device = embed_kwargs.get("device")
    scorer = probe_scorer(head) if head is not None else zero_shot_scorer(model, classes, device=device)
    a = run_analysis(model, path, scorer, window=window, stride=stride, **embed_kwargs)
    return emotion_table(
        a.table, scorer.classes, a.embedding.path, a.embedding.info.duration, scorer.probabilities
    )
