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

from ..constants import SENTIMENT_CLASSES
from ..heads import (
    ProbeHead,
    check_class_names,
    check_head_or_classes,
    top_emotions,
    zero_shot_classifier,
    zero_shot_scores,
)
from ..runner import Runner, as_runner
from .embed import EmbedSettings, VideoEmbedding, embed_windows
from .table import EmotionTable, emotion_table

logger = logging.getLogger(__name__)

FIXED_COLUMNS = ("window", "start", "end", "has_person", "padded_frames", "boxes", "top_emotion")
UNION = "all"  # the ``person`` of the usual row: the window scored with the union of all boxes


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
    eval) or a runner (:mod:`emotionclip.runner`).
    """
    classes = SENTIMENT_CLASSES if classes is None else tuple(classes)
    check_classes(classes)
    runner = as_runner(model, device)
    classifier = zero_shot_classifier(runner, classes).cpu()
    scale = float(runner.logit_scale.detach().exp())
    return EmotionScorer(
        classes, "zero-shot", classifier.shape[1], lambda f: zero_shot_scores(f, classifier, scale)
    )


def probe_scorer(head_path: str | Path) -> EmotionScorer:
    """A linear-probe head saved by ``emotionclip evaluate`` (a folder with head.safetensors + head.json)."""
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
    """One row per window: times, the subject boxes used, has_person, top emotion, one column per class.

    With per-person rows (``embed_video(..., per_person=True)``) a ``person`` column follows
    ``window``: ``"all"`` for the window's usual row, else the person id, whose row holds that
    person's box per frame and the scores of the clip encoded with that person's mask alone; rows
    are ordered by window, ``all`` first, then by person.
    """
    if embedding.features.shape[1] != scorer.dim:
        raise ValueError(
            f"the {scorer.method} head expects {scorer.dim}-d features, "
            f"the model gives {embedding.features.shape[1]}-d"
        )
    table = _rows(embedding.features, embedding.boxes, np.arange(len(embedding.starts)), embedding, scorer)
    if embedding.persons is None:
        return table
    if "person" in scorer.classes:
        raise ValueError("class name 'person' is a reserved column name of per-person tables")
    p = embedding.persons
    people = _rows(p.features, p.boxes, p.window, embedding, scorer)
    people["has_person"] = True
    table.insert(1, "person", UNION)
    people.insert(1, "person", p.person.astype(object))
    both = pd.concat([table, people], ignore_index=True)
    order = np.lexsort((np.r_[np.zeros(len(table)), p.person], both["window"].to_numpy()))
    return both.iloc[order].reset_index(drop=True)


def union_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The usual one row per window of a table that may hold per-person rows too."""
    if "person" not in table.columns:
        return table
    return table[table["person"].astype(str) == UNION].reset_index(drop=True)


def person_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Only the per-person rows (empty without them), ``person`` as int."""
    if "person" not in table.columns:
        return table.iloc[:0]
    rows = table[table["person"].astype(str) != UNION].reset_index(drop=True)
    return rows.assign(person=rows["person"].astype(int))


def _rows(features, boxes, windows, embedding: VideoEmbedding, scorer: EmotionScorer) -> pd.DataFrame:
    probs = scorer(features) if len(features) else np.zeros((0, len(scorer.classes)), np.float32)
    table = pd.DataFrame(
        {
            "window": windows,
            "start": embedding.starts[windows].round(3),
            "end": embedding.ends[windows].round(3),
            "has_person": embedding.has_person[windows],
            "padded_frames": _padded(embedding)[windows],
            "boxes": [json.dumps([rounded_boxes(b) for b in frames]) for frames in boxes],
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


def run_analysis(
    runner: Runner,
    path: str | Path,
    scorer: EmotionScorer,
    settings: EmbedSettings,
    keyframes: int = 12,
    progress: bool = False,
) -> Analysis:
    embedding = embed_windows(runner, path, settings, keyframes, progress)
    return Analysis(score_table(embedding, scorer), embedding, scorer)


def analyze_video(
    model,
    path: str | Path,
    classes: Sequence[str] | None = None,
    head: str | Path | None = None,
    *,
    device: str | torch.device | None = None,
    precision: str | None = None,
    keyframes: int = 12,
    progress: bool = False,
    **settings,
) -> EmotionTable:
    """Emotion scores over time for one video, one row per window (see :func:`score_table`).

    Scores are zero-shot over ``classes`` (default: the 7 sentiment classes) unless ``head`` names
    a saved linear-probe head. ``model``, ``device`` and ``precision`` as in :func:`embed_video`;
    the other keywords are :class:`~emotionclip.analyze.embed.EmbedSettings` (``window``,
    ``stride``, ``detector``, ``batch_size``, ``per_person``: one more row per (window, person),
    :mod:`.persons`, ...).
    """
    check_head_or_classes(head, classes)
    embed = EmbedSettings(**settings)
    runner = as_runner(model, device, precision)
    scorer = probe_scorer(head) if head is not None else zero_shot_scorer(runner, classes)
    a = run_analysis(runner, path, scorer, embed, keyframes, progress)
    return emotion_table(
        a.table, scorer.classes, a.embedding.path, a.embedding.info.duration, scorer.probabilities
    )
