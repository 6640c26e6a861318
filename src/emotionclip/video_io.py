"""Video decoding with PyAV, shared by every stage (prepare, evaluate, analyze).

Decoding is lazy and seeks: only the requested time range is decoded and frames are
yielded one by one, so memory stays flat however long the file is.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from emotionclip._io import FileError

# file extensions treated as media when a folder is searched (a file named explicitly is always tried)
VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".avi",
    ".flv",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".wmv",
    ".ogv",
    ".3gp",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


class VideoError(FileError, RuntimeError):
    """A video could not be opened or decoded. The message names the file and the problem."""


class ImageError(FileError, ValueError):
    """An image could not be read. The message names the file and the problem."""


def load_image(image) -> np.ndarray:
    """An image as ``uint8 [H, W, 3]`` RGB: a path, a PIL image or such an array (returned as is)."""
    if isinstance(image, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        path = Path(image)
        if not path.is_file():
            raise ImageError(path, "no such file" if not path.exists() else "is not a file")
        try:
            with Image.open(path) as im:
                return np.array(im.convert("RGB"))
        except (UnidentifiedImageError, OSError) as e:
            raise ImageError(path, f"cannot read as an image ({e})") from e
    if hasattr(image, "convert"):  # PIL image
        return np.array(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(f"image must be uint8 RGB [H, W, 3], got {array.dtype} {list(array.shape)}")
    return array


@dataclass(frozen=True)
class VideoInfo:
    path: str
    duration: float  # seconds
    fps: float  # average frame rate of the video stream
    width: int
    height: int
    num_frames: int  # container's count, or duration * fps when the container does not say
    codec: str


def _open(path: str | Path) -> av.container.InputContainer:
    path = Path(path)
    if not path.exists():
        raise VideoError(path, "no such file")
    if path.is_dir():
        raise VideoError(path, "is a directory, not a video file")
    try:
        return av.open(str(path), metadata_errors="ignore")
    except av.error.FFmpegError as e:
        raise VideoError(path, f"cannot open as a video container ({e})") from e


def _video_stream(container, path) -> av.video.stream.VideoStream:
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["nothing"]
        raise VideoError(path, f"has no video stream (contains: {', '.join(kinds)})")
    return container.streams.video[0]


def _stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's duration, frame rate and size without decoding it."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        fps = float(stream.average_rate or stream.guessed_rate or 0.0)
        duration = _stream_duration(container, stream)
        frames = int(stream.frames) if stream.frames else int(round(duration * fps))
        ctx = stream.codec_context
        if not ctx.width or not ctx.height:
            raise VideoError(path, "video stream has no frame size (corrupt header?)")
        if duration <= 0 and frames <= 0:
            raise VideoError(path, "video stream is empty (0 s)")
        return VideoInfo(str(path), duration, fps, ctx.width, ctx.height, frames, ctx.name)


# below this, decoding from the start is cheaper than a seek (and some FLV demuxers refuse tiny seeks)
_MIN_SEEK_S = 1.0


def _open_at(path: str | Path, start: float):
    """Open ``path`` positioned at the key frame before ``start`` -> ``(container, video stream)``.

    Containers that cannot seek are reopened and decoded from the beginning instead.
    """
    container = _open(path)
    stream = _video_stream(container, path)
    if start >= _MIN_SEEK_S:
        try:
            container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
        except av.error.FFmpegError:
            container.close()
            container = _open(path)
            stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return container, stream


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    # round like torchvision's Resize(int): the short side is exact, the long side rounded down
    if width <= height:
        return short_side, int(height * scale)
    return int(width * scale), short_side


def iter_frames(
    path: str | Path,
    start: float = 0.0,
    end: float | None = None,
    fps: float | None = None,
    short_side: int | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_s, rgb[H, W, 3] uint8)`` for frames in ``[start, end)``.

    With ``fps`` set, frames are sampled at times ``start + k / fps`` (the decoded frame showing
    at that instant is used, so a low-rate source repeats frames). Without it every decoded
    frame is yielded. ``short_side`` resizes in the decoder (swscale, area filter).
    Only the range is decoded: the container is seeked to the key frame before ``start``.
    """
    container, stream = _open_at(path, start)
    try:
        ctx = stream.codec_context
        out_w, out_h = _target_size(ctx.width, ctx.height, short_side)
        step = None if fps is None else 1.0 / fps
        next_t = start
        prev = None  # (time, frame) of the last decoded frame before the next sample instant
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if step is None:
                    if t < start - 1e-6:
                        continue
                    if end is not None and t >= end:
                        break
                    yield t, _to_rgb(frame, out_w, out_h)
                    continue
                # emit every sample instant that falls before this frame using the previous frame
                while prev is not None and next_t < t - 1e-6 and (end is None or next_t < end):
                    yield next_t, _to_rgb(prev, out_w, out_h)
                    next_t += step
                if end is not None and next_t >= end:
                    break
                prev = frame
            # the stream ended: the last frame shows until the end of the range (or one frame period)
            if step is not None and prev is not None:
                last_t = float(prev.pts * stream.time_base)
                frame_period = 1.0 / float(stream.average_rate or fps)
                stop = last_t + frame_period if end is None else min(end, last_t + frame_period)
                while next_t < stop - 1e-6:
                    yield next_t, _to_rgb(prev, out_w, out_h)
                    next_t += step
        except av.error.FFmpegError as e:
            raise VideoError(path, f"decoding failed near {next_t:.2f} s ({e})") from e
    finally:
        container.close()


def _to_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    if frame.width == width and frame.height == height:
        return frame.to_ndarray(format="rgb24")
    return frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")


def read_frames_at(path: str | Path, times: Sequence[float], short_side: int | None = None) -> np.ndarray:
    """Frames showing at the given instants, as ``[N, H, W, 3]`` uint8 (one seek, one pass).

    ``times`` must be sorted. Raises :class:`VideoError` if the video ends before the first time.
    """
    times = [float(t) for t in times]
    if not times:
        raise ValueError("read_frames_at needs at least one time")
    if any(b < a for a, b in zip(times, times[1:])):
        raise ValueError("read_frames_at: times must be sorted")
    out: list[np.ndarray] = []
    last = None
    container, stream = _open_at(path, times[0])
    try:
        ctx = stream.codec_context
        out_w, out_h = _target_size(ctx.width, ctx.height, short_side)
        i = 0
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                while i < len(times) and last is not None and times[i] < t - 1e-6:
                    out.append(_to_rgb(last, out_w, out_h))
                    i += 1
                if i == len(times):
                    break
                last = frame
        except av.error.FFmpegError as e:
            if last is None:
                raise VideoError(path, f"decoding failed ({e})") from e
        if last is None:
            raise VideoError(path, "no frame could be decoded")
        while i < len(times):  # instants past the last frame show the last frame
            out.append(_to_rgb(last, out_w, out_h))
            i += 1
    finally:
        container.close()
    return np.stack(out)


def uniform_times(start: float, end: float, num: int) -> list[float]:
    """``num`` instants spread uniformly over ``[start, end)`` (centres of equal segments)."""
    if num <= 0:
        raise ValueError("num must be positive")
    if not math.isfinite(start) or not math.isfinite(end) or end <= start:
        raise ValueError(f"invalid time range [{start}, {end})")
    seg = (end - start) / num
    return [start + seg * (k + 0.5) for k in range(num)]
