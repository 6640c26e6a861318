"""Streaming windows over a video: the window rule, decoding on a regular grid, batching.

A window is ``window`` seconds long; windows start at 0 and every ``stride`` seconds after, and a
window is kept only while ``start + window <= duration``. A video shorter than one window gets a
single window covering all of it. The tail after the last full window (shorter than ``stride``)
gets no window of its own; with ``stride <= window`` it is at most ``stride`` seconds.

Each window is seen through ``video_len`` frames at the centres of equal segments of the window.
Frames are decoded once, on a grid of step ``window / video_len`` seconds shared by all windows
(so overlapping windows share decoded frames and person detections); a window's sample instants
are grid points exactly when ``stride`` is a multiple of the grid step (the defaults are), else
the nearest grid point is used (off by at most half a step). Only the frames of the windows in
flight are held, so memory does not grow with the length of the video.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotionclip._prefetch import prefetch
from emotionclip.detect.track import TRACK_MAX_GAP, TRACK_MAX_LOST, BoxTracker
from emotionclip.video_io import VideoError, VideoInfo, iter_frames

logger = logging.getLogger(__name__)

_EPS = 1e-6


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of one video are and which grid frames each one uses."""

    starts: np.ndarray  # [N] seconds
    ends: np.ndarray  # [N] seconds
    grid_step: float  # seconds between decoded frames
    grid_index: np.ndarray  # [N, T] index m of the grid frame at time (m + 0.5) * grid_step

    def __len__(self) -> int:
        return len(self.starts)


def window_starts(duration: float, window: float, stride: float) -> np.ndarray:
    """Start times of the windows of a ``duration``-second video (see the module docstring)."""
    if not (window > 0 and stride > 0 and math.isfinite(window) and math.isfinite(stride)):
        raise ValueError(f"window and stride must be positive seconds, got window={window}, stride={stride}")
    if not duration > 0:
        raise ValueError(f"video duration must be positive, got {duration}")
    if duration < window + _EPS:
        return np.zeros(1)
    count = int(math.floor((duration - window) / stride + _EPS)) + 1
    return np.arange(count) * stride


def plan_windows(duration: float, window: float, stride: float, frames_per_window: int) -> WindowPlan:
    starts = window_starts(duration, window, stride)
    length = min(window, duration)
    ends = starts + length
    step = length / frames_per_window
    grid = np.rint(starts[:, None] / step + np.arange(frames_per_window)[None, :]).astype(np.int64)
    return WindowPlan(starts, ends, step, grid)


@dataclass
class Window:
    index: int
    start: float
    end: float
    grid: np.ndarray  # [T] grid index of each frame (the same index = the same decoded frame)
    times: np.ndarray  # [T] instants of the frames
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB at decode size
    boxes: list[np.ndarray]  # T x [K, 5] float32 person boxes in decode-size pixels ([K, 6] tracked)
    padded: int = 0  # frames past the end of a truncated stream (the last decoded frame repeated)


def iter_windows(
    path: str | Path,
    info: VideoInfo,
    plan: WindowPlan,
    detector=None,
    short_side: int | None = None,
    detect_batch: int = 16,
    workers: int = 0,
    detect_every: int = 1,
    track: bool = False,
) -> Iterator[Window]:
    """Decode ``path`` once along ``plan``'s grid and yield its windows in order.

    ``detector.detect(frames [N, H, W, 3], video=, times=)`` gives one ``[K, 5]`` box array per
    frame; each grid frame is detected once, however many windows use it, in batches of up to
    ``detect_batch`` frames; with ``detect_every=k`` only every k-th grid frame is detected and the
    frames between take its boxes; ``track`` follows people through the video (:func:`track_detected`).
    Without a detector no boxes are reported. ``workers=1`` decodes and
    detects in two background threads (a pipeline: the next frames decode while these are detected).
    """
    if len(plan) == 0:
        return
    frames = grid_frames(path, info, plan, short_side)
    if workers:
        frames = prefetch(frames, depth=2 * detect_batch)
    detected = detect_frames(frames, detector, path, plan.grid_step, detect_batch, detect_every)
    if track and detector is not None:
        detected = track_detected(detected, detect_every)
    if workers:
        detected = prefetch(detected, depth=2 * detect_batch)
    yield from assemble_windows(detected, plan)


def grid_frames(
    path: str | Path, info: VideoInfo, plan: WindowPlan, short_side: int | None = None
) -> Iterator[tuple[int, np.ndarray, bool]]:
    """``(grid index, frame, padded)`` for every grid index some window uses, in order, once each.

    A grid instant the decoder skipped gets the frame shown just before it; when the stream ends
    before the duration its header states, the last frame is repeated (``padded=True``).
    """
    step = plan.grid_step
    needed = np.unique(plan.grid_index)
    frames = iter_frames(
        path, start=step / 2, end=(int(needed[-1]) + 1) * step, fps=1.0 / step, short_side=short_side
    )
    i, last, newest = 0, None, -1
    for t, frame in frames:
        newest = int(round(t / step - 0.5))
        while i < len(needed) and needed[i] <= newest:
            m = int(needed[i])
            yield m, (frame if m == newest or last is None else last), False
            i += 1
        last = frame
        if i == len(needed):
            return
    if last is None:
        raise VideoError(path, "no frame could be decoded")
    if i < len(needed):
        windows_left = int((plan.grid_index[:, -1] > newest).sum())
        logger.warning(
            "%s: video stream ends near %.2f s, before its stated duration %.2f s; "
            "last frame repeated to fill %d window(s)",
            path,
            (newest + 1) * step,
            info.duration,
            windows_left,
        )
        for m in needed[i:]:
            yield int(m), last, True


def detect_frames(
    frames: Iterable[tuple[int, np.ndarray, bool]],
    detector,
    path,
    step: float,
    batch: int = 16,
    every: int = 1,
) -> Iterator[tuple[int, np.ndarray, bool, np.ndarray]]:
    """``(grid index, frame, padded, boxes)``: the detector runs on batches of up to ``batch`` frames,
    on grid frames ``every`` apart; a frame in between takes the boxes of the last detected one."""
    if every < 1:
        raise ValueError(f"detect_every must be >= 1, got {every}")
    empty = np.zeros((0, 5), np.float32)
    pending: list[tuple[int, np.ndarray, bool]] = []
    last_m, last_boxes = None, empty  # the last detected frame, carried across batches

    def flush():
        nonlocal last_m, last_boxes
        if detector is None:
            out = [(m, f, p, empty) for m, f, p in pending]
            pending.clear()
            return out
        todo, m_prev = [], last_m
        for k, (m, _, _) in enumerate(pending):
            if m_prev is None or m - m_prev >= every:
                todo.append(k)
                m_prev = m
        found = {}
        if todo:  # a small batch can lie wholly between two detected frames
            boxes = detector.detect(
                np.stack([pending[k][1] for k in todo]),
                video=str(path),
                times=[(pending[k][0] + 0.5) * step for k in todo],
            )
            found = dict(zip(todo, boxes, strict=True))
        out = []
        for k, (m, f, p) in enumerate(pending):
            if k in found:
                last_m, last_boxes = m, found[k]
            out.append((m, f, p, last_boxes))
        pending.clear()
        return out

    for item in frames:
        pending.append(item)
        if len(pending) >= batch:
            yield from flush()
    if pending:
        yield from flush()


def track_detected(
    detected: Iterable[tuple[int, np.ndarray, bool, np.ndarray]], detect_every: int = 1
) -> Iterator[tuple[int, np.ndarray, bool, np.ndarray]]:
    """Detected grid frames with their boxes linked into tracks (``[K, 6]``, :class:`BoxTracker`): a
    frame comes out a few frames late, once no later detection can fill a gap in it. With
    ``detect_every=k`` one missed detection leaves k grid frames without the person, so the tracker's
    gaps count k grid frames a detection."""
    tracker = BoxTracker(max_gap=detect_every * TRACK_MAX_GAP, max_lost=detect_every * TRACK_MAX_LOST)
    held: deque[tuple[int, np.ndarray, bool]] = deque()
    for m, frame, padded, boxes in detected:
        held.append((m, frame, padded))
        for settled in tracker.push(boxes):
            yield (*held.popleft(), settled)
    for settled in tracker.flush():
        yield (*held.popleft(), settled)


def assemble_windows(
    detected: Iterable[tuple[int, np.ndarray, bool, np.ndarray]], plan: WindowPlan
) -> Iterator[Window]:
    """Windows from detected grid frames; only the frames of windows still to come are held."""
    buffer: dict[int, tuple[np.ndarray, bool, np.ndarray]] = {}
    next_window = 0
    for m, frame, padded, boxes in detected:
        buffer[m] = (frame, padded, boxes)
        while next_window < len(plan) and plan.grid_index[next_window, -1] <= m:
            idx = plan.grid_index[next_window]
            parts = [buffer[int(k)] for k in idx]
            yield Window(
                index=next_window,
                start=float(plan.starts[next_window]),
                end=float(plan.ends[next_window]),
                grid=idx,
                times=(idx + 0.5) * plan.grid_step,
                frames=np.stack([p[0] for p in parts]),
                boxes=[p[2] for p in parts],
                padded=sum(p[1] for p in parts),
            )
            next_window += 1
            if next_window < len(plan):  # drop frames no later window needs
                keep_from = int(plan.grid_index[next_window, 0])
                for k in [k for k in buffer if k < keep_from]:
                    del buffer[k]


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
