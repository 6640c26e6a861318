"""Fitting each task's linear probe on the training split and scoring the evaluation splits."""

from __future__ import annotations

import logging

import numpy as np

from .benchmarks import BENCHMARKS
from .datasets import Split
from .features import Features
from .probe import LinearProbe, ProbeHead
from .scoring import score
from .smoothing import PER_MOVIE, smooth, smooth_per_group

logger = logging.getLogger(__name__)


def _xy(split: Split, feats: Features, label: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, labels and groups of the split's encoded samples, in the split's order (smoothing
    runs along it)."""
    row = {k: i for i, k in enumerate(feats.keys)}
    used = [s for s in split.samples if s.key in row]
    if not used:
        return np.zeros((0, feats.features.shape[-1]), np.float32), np.zeros((0,)), []
    x = feats.features[[row[s.key] for s in used]]
    return x, np.stack([np.asarray(s.labels[label]) for s in used]), [s.group for s in used]


def run_probes(
    dataset: str,
    splits: dict[str, Split],
    feats: dict[str, Features],
    solver: str = "torch",
    device: str | None = None,
    macro: str = "defined",
) -> tuple[dict[str, dict[str, float]], dict[str, ProbeHead], dict[str, dict]]:
    """Fit each task's probe on the training split; metrics per evaluation split (``macro``: see
    :func:`score`).

    Returns ``(metrics[split], heads[task label], predictions[task][split] = (y, scores))``.
    """
    bench = BENCHMARKS[dataset]
    train = splits[bench.train]
    results: dict[str, dict[str, float]] = {s: {} for s in bench.evals}
    heads, predictions = {}, {}
    for task in bench.tasks:
        names = train.class_names[task.label]
        x, y, _ = _xy(train, feats[bench.train], task.label)
        if len(x) == 0:
            raise ValueError(f"{dataset}/{bench.train}: no usable training samples")
        head = LinearProbe(task.kind, task.c, solver=solver, device=device).fit(x, y, names)
        head.meta.update({"dataset": dataset, "label": task.label, "train_samples": len(x)})
        heads[task.label] = head
        predictions[task.label] = {}
        for s in bench.evals:
            xe, ye, groups = _xy(splits[s], feats[s], task.label)
            if len(xe) == 0:
                logger.warning("%s/%s: no usable samples, no metrics", dataset, s)
                continue
            p = head.predict(xe)
            if task.smooth:
                variant = f"{s} ({PER_MOVIE})"
                results.setdefault(variant, {}).update(
                    score(task, ye, smooth_per_group(p, groups), names, macro)
                )
                p = smooth(p)
            results[s].update(score(task, ye, p, names, macro))
            predictions[task.label][s] = (ye, p)
    return results, heads, predictions
