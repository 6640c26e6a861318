"""The release's smoothing of LIRIS-ACCEDE predictions (Savitzky-Golay along the test movies)."""

from __future__ import annotations

import numpy as np
from scipy.signal import savgol_filter

SAVGOL_WINDOW, SAVGOL_ORDER = 100, 3  # the release's smoothing of LIRIS-ACCEDE predictions


def smooth(pred: np.ndarray) -> np.ndarray:
    """The release's smoothing: Savitzky-Golay (window 100, order 3) along all ``pred`` rows at once
    (the test movies concatenated); a shorter split uses a window of its length."""
    window = min(SAVGOL_WINDOW, len(pred))
    if window <= SAVGOL_ORDER:
        return pred.copy()
    return savgol_filter(pred, window_length=window, polyorder=SAVGOL_ORDER, axis=0)


def smooth_per_group(pred: np.ndarray, groups: list[str]) -> np.ndarray:
    """:func:`smooth` along each group's samples (in their order): no filter across a movie boundary."""
    out = pred.copy()
    groups_arr = np.asarray(groups)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups_arr == g)
        out[idx] = smooth(pred[idx])
    return out


PER_MOVIE = "per-movie smoothing"  # the variant row's suffix
