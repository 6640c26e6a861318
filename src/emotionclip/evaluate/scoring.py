"""A task's metrics from labels and scores, as the paper reports them."""

from __future__ import annotations

import numpy as np

from . import metrics as M
from .benchmarks import Task


def score(
    task: Task, y: np.ndarray, scores: np.ndarray, names: list[str], macro: str = "defined"
) -> dict[str, float]:
    """The task's metrics; classification ones in percent as the paper reports them. ``macro``: how
    mAP treats a class with one label value in the split (:func:`metrics.macro_map`)."""
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "mAP":
            out[m] = 100 * M.macro_map(y, scores, macro)
        elif m == "AUC":
            out[m] = 100 * M.macro_roc_auc(y, scores)
        elif m == "R2":
            out[m] = 100 * M.r2(y, scores)
        elif m == "top1_hit":
            out[m] = 100 * M.top1_hit(y, scores)
        elif m == "weighted_F1":
            out[m] = 100 * M.weighted_f1(y, scores.argmax(1))
        elif m == "accuracy":
            out[m] = 100 * M.accuracy(y, scores.argmax(1))
        elif m in ("MSE", "PCC"):
            per = M.mse(y, scores) if m == "MSE" else M.pearson_r(y, scores)
            out.update({f"{n}_{m}": float(v) for n, v in zip(names, per, strict=True)})
            out[m] = float(np.mean(per))
    return out
