"""People followed through time: per-frame boxes linked into tracks, short gaps filled.

A detector looks at each frame alone, so a person it misses in one frame between two detections loses
the subject mask there, and nothing says that the box on the left in frame 3 is the person on the left
in frame 4. :class:`BoxTracker` links the boxes of consecutive frames by overlap (IoU, one-to-one by
the Hungarian method), gives every box a track id (the sixth box column; ids count from 1 in order of
first appearance), and fills a gap of up to ``max_gap`` frames in a track with boxes interpolated
between the two detections around it. A track missed for longer keeps its id when the person is found
again within ``max_lost`` frames where it was last seen (no boxes are invented for such a gap). It works on a stream: a frame is handed back once no later
frame can fill a gap in it, ``max_gap`` frames later.

Why not a library tracker: ``supervision``'s ByteTrack (MIT) and ``norfair`` (BSD) are online
trackers that report only the boxes a detection confirms (a person missed in a frame stays missing
there), run a Kalman filter that wants a steady frame rate, and bring OpenCV (supervision) or filterpy
with them. Between detections a few frames apart IoU association is what they do too.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from .base import as_boxes

TRACK_IOU = 0.3  # a box continues a track when it overlaps the track's last box at least this much
TRACK_MAX_GAP = 1  # frames a track may go unseen and be filled in
# frames a track may go unseen and still be continued (ByteTrack keeps lost tracks alike): detectors
# flicker for a few frames on hard footage (friday: both women missed twice running at 4 fps)
TRACK_MAX_LOST = 4


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU ``[len(a), len(b)]`` of ``(x1, y1, x2, y2, ...)`` boxes."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:4], b[None, :, 2:4])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


class BoxTracker:
    """Link boxes frame by frame: ``push(boxes)`` per frame in order returns the frames now settled
    (``[K, 6]`` each, oldest first); ``flush()`` returns the rest at the end of the stream."""

    def __init__(self, iou: float = TRACK_IOU, max_gap: int = TRACK_MAX_GAP, max_lost: int = TRACK_MAX_LOST):
        if not 0 < iou <= 1 or not 0 <= max_gap <= max_lost:
            raise ValueError(
                f"need 0 < iou <= 1 and 0 <= max_gap <= max_lost, got {iou}, {max_gap}, {max_lost}"
            )
        self.iou, self.max_gap, self.max_lost = iou, max_gap, max_lost
        self._next_id = 1
        self._last: dict[int, tuple[int, np.ndarray]] = {}  # track id -> (frame, its box there)
        self._held: deque[tuple[int, list[np.ndarray]]] = deque()  # frames not handed back yet
        self._frame = -1

    def push(self, boxes) -> list[np.ndarray]:
        self._frame += 1
        found = as_boxes(boxes)[:, :5]
        ids = self._match(found)
        self._held.append((self._frame, [np.concatenate([found, ids[:, None]], 1).astype(np.float32)]))
        settled = []
        while self._held and self._frame - self._held[0][0] >= self.max_gap:
            settled.append(np.concatenate(self._held.popleft()[1]))
        return settled

    def flush(self) -> list[np.ndarray]:
        settled = [np.concatenate(parts) for _, parts in self._held]
        self._held.clear()
        return settled

    def _match(self, found: np.ndarray) -> np.ndarray:
        ids = np.zeros(len(found), np.float32)
        live = [(t, f, b) for t, (f, b) in self._last.items() if self._frame - f <= self.max_lost + 1]
        pairs = []
        if live and len(found):
            from scipy.optimize import linear_sum_assignment

            overlap = box_iou(np.stack([b for _, _, b in live]), found)
            rows, cols = linear_sum_assignment(-overlap)
            pairs = [(r, c) for r, c in zip(rows, cols) if overlap[r, c] >= self.iou]
        for r, c in pairs:
            track, seen, before = live[r]
            ids[c] = track
            if self._frame - seen <= self.max_gap + 1:
                self._fill(track, seen, before, found[c])
        for c in sorted(set(range(len(found))) - {c for _, c in pairs}):
            ids[c] = self._next_id
            self._next_id += 1
        for c, track in enumerate(ids):
            self._last[int(track)] = (self._frame, found[c])
        for track in [t for t, (f, _) in self._last.items() if self._frame - f > self.max_lost]:
            del self._last[track]  # gone for good
        return ids

    def _fill(self, track: int, seen: int, before: np.ndarray, now: np.ndarray) -> None:
        """Boxes for the frames between ``seen`` and now, interpolated; the lower score of the two."""
        gap = self._frame - seen
        for frame, parts in self._held:
            if seen < frame < self._frame:
                w = (frame - seen) / gap
                box = (1 - w) * before[:4] + w * now[:4]
                parts.append(np.array([[*box, min(before[4], now[4]), track]], np.float32))


def track_boxes(
    frame_boxes, iou: float = TRACK_IOU, max_gap: int = TRACK_MAX_GAP, max_lost: int = TRACK_MAX_LOST
) -> list[np.ndarray]:
    """The boxes of a clip's frames, in order -> the same frames' ``[K, 6]`` boxes with track ids and
    gaps of up to ``max_gap`` frames filled (:class:`BoxTracker`)."""
    tracker = BoxTracker(iou, max_gap, max_lost)
    out = [b for boxes in frame_boxes for b in tracker.push(boxes)]
    return out + tracker.flush()
