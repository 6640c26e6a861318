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
import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    boxes: list[np.ndarray]  # T x [K, 5] float32 person boxes in decode-size pixels
    padded: int = 0  # frames past the end of a truncated stream (the last decoded frame repeated)


def iter_windows(
    path: str | Path,
    info: VideoInfo,
    plan: WindowPlan,
    detector=None,
    short_side: int | None = None,
) -> Iterator[Window]:
    """Decode ``path`` once along ``plan``'s grid and yield its windows in order.

    ``detector.detect(frames [N, H, W, 3], video=, times=)`` gives one ``[K, 5]`` box array per
    frame; each grid frame is detected once, however many windows use it. Without a detector no
    boxes are reported.
    """
    if len(plan) == 0:
        return
    step = plan.grid_step
    last_index = int(plan.grid_index.max())
    frames = iter_frames(
        path, start=step / 2, end=(last_index + 1) * step, fps=1.0 / step, short_side=short_side
    )
    buffer: dict[int, np.ndarray] = {}
    boxes: dict[int, np.ndarray] = {}
    next_window = 0
    newest, last = -1, None
    for t, frame in frames:
        newest, last = int(round(t / step - 0.5)), frame
        if next_window < len(plan) and newest < plan.grid_index[next_window, 0]:
            continue  # between windows (stride > window): no window needs this frame
        buffer[newest] = frame
        while next_window < len(plan) and plan.grid_index[next_window, -1] <= newest:
            yield _make_window(path, plan, next_window, buffer, boxes, detector)
            next_window += 1
            if next_window < len(plan):  # drop frames no later window needs
                keep_from = int(plan.grid_index[next_window, 0])
                for m in [m for m in buffer if m < keep_from]:
                    del buffer[m]
                    boxes.pop(m, None)
    if last is None:
        raise VideoError(path, "no frame could be decoded")
    if next_window < len(plan):
        # the stream ended before the duration its header states: finish with the last frame shown
        logger.warning(
            "%s: video stream ends near %.2f s, before its stated duration %.2f s; "
            "last frame repeated to fill %d window(s)",
            path,
            (newest + 1) * step,
            info.duration,
            len(plan) - next_window,
        )
        for m in range(newest + 1, last_index + 1):
            buffer[m] = last
        while next_window < len(plan):
            w = _make_window(path, plan, next_window, buffer, boxes, detector)
            w.padded = int((plan.grid_index[next_window] > newest).sum())
            yield w
            next_window += 1


def _make_window(path, plan, i, buffer, boxes, detector) -> Window:
    idx = plan.grid_index[i]
    step = plan.grid_step
    missing = [int(m) for m in idx if int(m) not in buffer]
    if missing:  # a grid instant the decoder skipped: the frame shown just before it
        for m in missing:
            earlier = [k for k in buffer if k < m]
            buffer[m] = buffer[max(earlier)] if earlier else buffer[min(buffer)]
    frames = np.stack([buffer[int(m)] for m in idx])
    todo = [int(m) for m in dict.fromkeys(idx.tolist()) if m not in boxes]
    if todo:
        if detector is None:
            found = [np.zeros((0, 5), np.float32)] * len(todo)
        else:
            times = [(m + 0.5) * step for m in todo]
            found = detector.detect(np.stack([buffer[m] for m in todo]), video=str(path), times=times)
        boxes.update(zip(todo, found, strict=True))
    return Window(
        index=i,
        start=float(plan.starts[i]),
        end=float(plan.ends[i]),
        grid=idx,
        times=(idx + 0.5) * step,
        frames=frames,
        boxes=[boxes[int(m)] for m in idx],
    )


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


_DONE = object()


def prefetch(items: Iterable, depth: int = 2) -> Iterator:
    """Produce ``items`` in a background thread, at most ``depth`` ahead (decode overlaps the model)."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((_DONE, None))
        except BaseException as e:  # handed to the consumer, which re-raises it
            put((None, e))

    thread = threading.Thread(target=produce, daemon=True, name="emotionclip-decode")
    thread.start()
    try:
        while True:
            item, error = q.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item
    finally:
        stop.set()
        thread.join()
