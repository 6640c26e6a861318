"""The person-detector interface and the helpers every detector shares.

Boxes are ``[K, 5]`` float32 ``(x1, y1, x2, y2, score)`` per frame, in pixels of that frame.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB [N, H, W, 3], got {frames.dtype} {list(frames.shape)}")
    return frames


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 5), np.float32)


class PersonDetector:
    """Finds the people in RGB frames. Subclasses set ``name`` and implement :meth:`detect`."""

    name: str = "abstract"

    def detect(
        self,
        frames: np.ndarray,
        *,
        video: str | None = None,
        times: Sequence[float] | None = None,
    ) -> list[np.ndarray]:
        """``frames`` uint8 ``[N, H, W, 3]`` RGB -> N arrays ``[K, 5]`` float32 ``(x1, y1, x2, y2, score)``
        in pixels of those frames. ``video`` (file path or id) and ``times`` (seconds in it) identify
        the frames; only detectors that look boxes up (``json:``) need them."""
        raise NotImplementedError

    def __call__(self, frames, **kw) -> list[np.ndarray]:
        return self.detect(frames, **kw)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"
