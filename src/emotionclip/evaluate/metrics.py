"""The benchmarks' metrics, vectorised over classes (checked against scikit-learn in the tests).

Scores are any monotone confidence (probabilities, logits). Macro averages skip classes whose
ground truth has a single value (AP / AUC are undefined there); ``macro_map(mode="release")``
counts them as scikit-learn does (AP 0 for an absent class), as the release's numbers do.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _columns(y_true, scores) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    y, s = (y[:, None], s[:, None]) if y.ndim == 1 else (y, s)
    if y.shape != s.shape:
        raise ValueError(f"labels {list(y.shape)} and scores {list(s.shape)} differ in shape")
    return y, s


def _defined(y: np.ndarray) -> np.ndarray:
    pos = (y > 0).sum(0)
    return (pos > 0) & (pos < len(y))


def average_precision(y_true, scores) -> np.ndarray:
    """Per-class AP (step-wise area under precision-recall, ties grouped as scikit-learn does)."""
    y, s = _columns(y_true, scores)
    out = np.full(y.shape[1], np.nan)
    for k in np.flatnonzero((y > 0).any(0)):  # one sort per class; classes are few
        order = np.argsort(-s[:, k], kind="mergesort")
        sk, yk = s[order, k], (y[order, k] > 0)
        last = np.r_[np.flatnonzero(np.diff(sk)), len(sk) - 1]  # end of each run of tied scores
        tp = np.cumsum(yk)[last]
        precision = tp / (last + 1)
        recall = tp / tp[-1]
        out[k] = np.sum(np.diff(np.r_[0.0, recall]) * precision)
    return out


def roc_auc(y_true, scores) -> np.ndarray:
    """Per-class ROC-AUC via the Mann-Whitney statistic (average ranks for ties)."""
    y, s = _columns(y_true, scores)
    pos = y > 0
    n_pos, n_neg = pos.sum(0), (~pos).sum(0)
    ranks = rankdata(s, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * pos).sum(0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where(_defined(y), auc, np.nan)


MACRO_MODES = ("defined", "release")


def macro_map(y_true, scores, mode: str = "defined") -> float:
    """Mean AP over the classes. ``"defined"``: over the classes with both labels in the split;
    ``"release"``: over every class, one absent from the split counting AP 0 and one in every sample
    AP 1, as the release's ``sklearn.metrics.average_precision_score``."""
    y, s = _columns(y_true, scores)
    if mode == "release":
        return float(np.mean(np.nan_to_num(average_precision(y, s), nan=0.0)))
    if mode != "defined":
        raise ValueError(f"macro mode must be one of {MACRO_MODES}, got {mode!r}")
    return float(np.nanmean(np.where(_defined(y), average_precision(y, s), np.nan)))


def macro_roc_auc(y_true, scores) -> float:
    return float(np.nanmean(roc_auc(y_true, scores)))


def top1_hit(y_true, scores) -> float:
    """Share of samples whose highest-scoring class is one of their labels (multi-label)."""
    y, s = _columns(y_true, scores)
    return float(np.mean(y[np.arange(len(y)), s.argmax(1)] > 0))


def accuracy(y_true, y_pred) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))


def weighted_f1(y_true, y_pred) -> float:
    """F1 per class, averaged with the classes' support as weights."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    n = int(max(t.max(), p.max())) + 1
    tp = np.bincount(t[t == p], minlength=n).astype(np.float64)
    support = np.bincount(t, minlength=n).astype(np.float64)
    predicted = np.bincount(p, minlength=n).astype(np.float64)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(n), where=denom > 0)
    return float(np.sum(f1 * support) / support.sum())


def r2(y_true, y_pred) -> float:
    """Coefficient of determination, averaged uniformly over output columns (a constant column
    scores 1 if predicted exactly, else 0, as in scikit-learn)."""
    y, p = _columns(y_true, y_pred)
    ss_res = ((y - p) ** 2).sum(0)
    ss_tot = ((y - y.mean(0)) ** 2).sum(0)
    safe = np.where(ss_tot > 0, ss_tot, 1.0)
    return float(np.mean(np.where(ss_tot > 0, 1 - ss_res / safe, (ss_res == 0).astype(np.float64))))


def mse(y_true, y_pred) -> np.ndarray:
    y, p = _columns(y_true, y_pred)
    return ((y - p) ** 2).mean(0)


def pearson_r(y_true, y_pred) -> np.ndarray:
    y, p = _columns(y_true, y_pred)
    yc, pc = y - y.mean(0), p - p.mean(0)
    return (yc * pc).sum(0) / np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
