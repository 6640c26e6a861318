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
from av.video.reformatter import VideoReformatter

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
        # with fps: the sample instants' frames, by the rule decode_ranges shares (_Sampler)
        sampler = None if fps is None else _Sampler(start, math.inf if end is None else end, 1.0 / fps)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                if sampler is None:
                    if t < start - 1e-6:
                        continue
                    if end is not None and t >= end:
                        break
                    yield t, _to_rgb(frame, out_w, out_h)
                    continue
                for instant, shown in sampler.feed(t, frame):
                    yield instant, _to_rgb(shown, out_w, out_h)
                if sampler.done:
                    break
            if sampler is not None and not sampler.done:  # the stream ended
                frame_period = 1.0 / float(stream.average_rate or fps)
                for instant, shown in sampler.finish(stream.time_base, frame_period):
                    yield instant, _to_rgb(shown, out_w, out_h)
        except av.error.FFmpegError as e:
            where = start if sampler is None else sampler.next_t
            raise VideoError(path, f"decoding failed near {where:.2f} s ({e})") from e
    finally:
        container.close()


# ------------------------------------------------------------------ several ranges in one pass

# key frames that no later frame (in decoding order) predicts across, per codec and bitstream
# unit type: continuing through one decodes exactly what a seek to it does. H.264: IDR only (a
# non-IDR I frame's successors may reference frames before it); HEVC: every IRAP (BLA, IDR, CRA:
# only its leading pictures, shown before it, reference earlier ones).
_INDEPENDENT_UNITS = {"h264": frozenset({5}), "hevc": frozenset(range(16, 24))}


@dataclass(frozen=True)
class _Landing:
    """The first video packet a decode of a range starts from (after its seek, if it seeks)."""

    pts: int | None
    dts: int | None
    pos: int | None
    independent: bool  # a key frame continuous decoding passes through unchanged (see above)

    def same(self, other: _Landing) -> bool:
        return (self.pts, self.dts, self.pos) == (other.pts, other.dts, other.pos)


def _unit_headers(data: bytes, length_size: int) -> list[bytes]:
    """The first two bytes (the header) of each NAL unit in an H.264/HEVC packet, length-prefixed
    as in MP4/MKV or with Annex B start codes; empty if the packet is neither."""
    if data[:3] == b"\0\0\1" or data[:4] == b"\0\0\0\1":  # Annex B start codes
        return [part[:2] for part in data.split(b"\0\0\1")[1:] if part]
    headers, i = [], 0
    while i + length_size < len(data):
        size = int.from_bytes(data[i : i + length_size], "big")
        if size <= 0 or i + length_size + size > len(data):
            return []  # not what we think it is: treat as unknown
        headers.append(data[i + length_size : i + length_size + 2])
        i += length_size + size
    return headers


def _unit_types(data: bytes, codec: str, length_size: int) -> list[int]:
    """NAL unit types in an H.264/HEVC packet."""
    shift, mask = (1, 0x3F) if codec == "hevc" else (0, 0x1F)
    return [(h[0] >> shift) & mask for h in _unit_headers(data, length_size)]


def _disposable(packet, codec: str, length_size: int, temporal_layers: int) -> bool:
    """Whether no other picture references this packet's picture, so that it can go undecoded:
    H.264 slices with nal_ref_idc 0; HEVC sub-layer non-reference pictures (TRAIL_N, TSA_N, STSA_N,
    RADL_N, RASL_N, reserved N) of the highest temporal layer (hvcC says how many there are)."""
    if packet.is_keyframe or codec not in _INDEPENDENT_UNITS:
        return False
    headers = _unit_headers(bytes(packet), length_size)
    if codec == "h264":
        vcl = [h for h in headers if 1 <= h[0] & 0x1F <= 5]
        return bool(vcl) and all((h[0] >> 5) & 3 == 0 for h in vcl)
    if temporal_layers < 1:
        return False
    vcl = [h for h in headers if len(h) == 2 and (h[0] >> 1) & 0x3F < 32]
    return bool(vcl) and all(
        (h[0] >> 1) & 0x3F < 16 and (h[0] >> 1) & 1 == 0 and (h[1] & 7) - 1 == temporal_layers - 1
        for h in vcl
    )


def _temporal_layers(codec: str, extradata: bytes | None) -> int:
    """HEVC's number of temporal layers from its hvcC record (0: unknown)."""
    if codec == "hevc" and extradata and len(extradata) > 21 and extradata[0] == 1:
        return (extradata[21] >> 3) & 7
    return 0


def _length_size(codec: str, extradata: bytes | None) -> int:
    if extradata and codec == "h264" and len(extradata) > 4 and extradata[0] == 1:
        return (extradata[4] & 3) + 1
    if extradata and codec == "hevc" and len(extradata) > 21 and extradata[0] == 1:
        return (extradata[21] & 3) + 1
    return 4


def _first_packet(container, stream, codec: str, length_size: int) -> _Landing | None:
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        independent = False
        if packet.is_keyframe and codec in _INDEPENDENT_UNITS:
            types = _unit_types(bytes(packet), codec, length_size)
            # H.264 units 1-5 and HEVC units 0-31 carry picture data: all of them must be independent
            vcl = [u for u in types if (u < 32 if codec == "hevc" else 1 <= u <= 5)]
            independent = bool(vcl) and all(u in _INDEPENDENT_UNITS[codec] for u in vcl)
        return _Landing(packet.pts, packet.dts, packet.pos, independent)
    return None


def _landings(path, starts: Sequence[float]) -> tuple[list[_Landing | None], float]:
    """Where :func:`_open_at` would start decoding for each start time (seeks and reads one packet
    each; nothing is decoded), and the stream's time base."""
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        codec = stream.codec_context.name
        length_size = _length_size(codec, stream.codec_context.extradata)
        at_open = _first_packet(container, stream, codec, length_size)
        out = []
        for start in starts:
            if start < _MIN_SEEK_S:
                out.append(at_open)
                continue
            try:
                container.seek(int(start / stream.time_base), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                out.append(at_open)  # _open_at reopens and decodes from the beginning
                continue
            out.append(_first_packet(container, stream, codec, length_size))
        return out, float(stream.time_base)
    finally:
        container.close()


def plan_passes(path: str | Path, ranges: Sequence[tuple[float, float]]) -> list[list[int]]:
    """Group ``ranges`` (``(start, end)`` in seconds) into decoding passes: lists of range indices,
    each decoded in one forward pass from the key frame before its first range's start.

    A range joins the pass before it when a decode of its own would start at the very packet the
    pass started from (the same decode, only longer), or at an independent key frame (see
    ``_INDEPENDENT_UNITS``) at or before its start that the pass decodes anyway (the pass ends
    after it). Otherwise it gets its own seek: past a gap a seek decodes less, and through a key
    frame later frames may predict across, a seek and a continuous decode can differ.
    """
    order = sorted(range(len(ranges)), key=lambda i: (ranges[i][0], i))
    landings, time_base = _landings(path, [ranges[i][0] for i in order])
    passes: list[list[int]] = []
    pass_landing, pass_end = None, -math.inf
    for i, landing in zip(order, landings):
        start, end = ranges[i]
        joins = False
        if passes and landing is not None and pass_landing is not None:
            if landing.same(pass_landing):
                joins = True
            elif landing.independent and landing.pts is not None:
                at = landing.pts * time_base
                joins = at < pass_end and at <= start + 1e-6
        if joins:
            passes[-1].append(i)
            pass_end = max(pass_end, end)
        else:
            passes.append([i])
            pass_landing, pass_end = landing, end
    return passes


class _Sampler:
    """One range's frames at ``fps``, fed every decoded frame in order: the rule of :func:`iter_frames`
    and :func:`decode_ranges` (the decoded frame showing at each instant ``start + k / fps``)."""

    def __init__(self, start: float, end: float, step: float):
        self.next_t, self.end, self.step = start, end, step
        self.prev = None
        self.done = False
        self.count = 0

    def feed(self, t: float, frame) -> list:
        out = []
        while self.prev is not None and self.next_t < t - 1e-6 and self.next_t < self.end:
            out.append((self.next_t, self.prev))
            self.next_t += self.step
        if self.next_t >= self.end:
            self.done = True
        else:
            self.prev = frame
        return out

    def finish(self, time_base, frame_period: float) -> list:
        """The stream ended: the last frame shows until the end of the range (or one frame period)."""
        out = []
        if self.prev is not None:
            stop = min(self.end, float(self.prev.pts * time_base) + frame_period)
            while self.next_t < stop - 1e-6:
                out.append((self.next_t, self.prev))
                self.next_t += self.step
        self.done = True
        return out


def decode_ranges(
    path: str | Path,
    ranges: Sequence[tuple[float, float]],
    fps: float,
    short_side: int | None = None,
) -> Iterator[tuple[int, float | None, np.ndarray | None]]:
    """The frames of several ranges of one video, decoded in as few forward passes as give the
    same frames: yields ``(range index, time_s, rgb)`` for each frame and ``(range index, None,
    None)`` once a range is complete.

    Each range gets exactly the frames (same instants, same pixels) that ``iter_frames(path,
    start, end, fps=fps, short_side=short_side)`` gives it; :func:`plan_passes` decides which
    ranges share a pass. Frames of overlapping ranges interleave; each range's come in order.
    Memory holds one decoded frame per range of the current pass. If a pass fails to decode, its
    unfinished ranges are decoded again one by one with :func:`iter_frames` (which reports the error
    if it is theirs).
    """
    step = 1.0 / fps
    for group in plan_passes(path, ranges):
        samplers = {i: _Sampler(ranges[i][0], ranges[i][1], step) for i in group}
        try:
            yield from _decode_pass(path, samplers, ranges[group[0]][0], fps, short_side)
        except VideoError:
            # a frame between the ranges that a seek would skip may be the broken one
            for i in group:
                sampler = samplers[i]
                if sampler.done:
                    continue
                frames = iter_frames(path, ranges[i][0], ranges[i][1], fps=fps, short_side=short_side)
                for k, (t, frame) in enumerate(frames):
                    if k >= sampler.count:
                        yield i, t, frame
                sampler.done = True
                yield i, None, None


def _decode_pass(path, samplers: dict, start: float, fps: float, short_side: int | None):
    container, stream = _open_at(path, start)
    try:
        ctx = stream.codec_context
        out_w, out_h = _target_size(ctx.width, ctx.height, short_side)
        active = dict(samplers)
        # one swscale context for the pass (to_ndarray builds one per frame): the same pixels
        reformatter = VideoReformatter()

        def emit(i, sampler, frames):
            for t, frame in frames:
                yield i, t, _to_rgb(frame, out_w, out_h, reformatter)
                sampler.count += 1
            if sampler.done:
                del active[i]
                yield i, None, None

        t = start
        try:
            for frame in _decode_needed(container, stream, samplers, fps):
                if frame.pts is None:
                    continue
                t = float(frame.pts * stream.time_base)
                for i, sampler in list(active.items()):
                    yield from emit(i, sampler, sampler.feed(t, frame))
                if not active:
                    break
            frame_period = 1.0 / float(stream.average_rate or fps)
            for i, sampler in list(active.items()):
                yield from emit(i, sampler, sampler.finish(stream.time_base, frame_period))
        except av.error.FFmpegError as e:
            raise VideoError(path, f"decoding failed near {t:.2f} s ({e})") from e
    finally:
        container.close()


_LOOKAHEAD = 24  # packets read ahead of the decoder: enough to see past any B-frame reordering
# a frame of time t, followed by one of time t_next, shows at the sample instants x with
# t - 1e-6 <= x < t_next - 1e-6 (the sampler's tolerance); widened by this margin, far above the
# rounding of x = start + k / fps (about 1e-12), so a frame on the boundary counts as needed
_MARGIN = 1e-7


def _needed(t: float, t_next: float, ranges) -> bool:
    """Whether a sample instant of some range falls where the frame of time ``t`` shows."""
    for start, end, step in ranges:
        lo = max(t - 1e-6 - _MARGIN, start - _MARGIN)
        hi = min(t_next - 1e-6 + _MARGIN, end + _MARGIN)
        if lo >= hi:
            continue
        k = max(0, math.ceil((lo - start) / step - 1e-9))
        if start + k * step < hi:
            return True
    return False


def _decode_needed(container, stream, samplers: dict, fps: float):
    """``container.decode(stream)``, less the pictures that no sample instant of ``samplers``' ranges
    shows and no other picture references (:func:`_disposable`): the decoder is told to skip those
    (``skip_frame`` NONREF for that packet only). A frame shows from its time until the next frame's:
    the next time is the smallest later time among the packets around it (read ``_LOOKAHEAD`` ahead;
    one further away only widens the interval, so more is kept). The pass's first frame (shown
    before its time too, if it is the first frame of all) and frames near the end are never skipped.
    Every frame that is decoded is decoded exactly as without skipping. (The one assumption: the
    decoder outputs every picture it is given. One it drops on its own, a damaged packet's, would
    leave the frame before it showing longer than the window said.)"""
    ctx = stream.codec_context
    codec = ctx.name
    if codec not in _INDEPENDENT_UNITS:
        yield from container.decode(stream)
        return
    length_size = _length_size(codec, ctx.extradata)
    layers = _temporal_layers(codec, ctx.extradata)
    time_base = stream.time_base
    step = 1.0 / fps
    ranges = [(s.next_t, s.end, step) for s in samplers.values()]
    ahead: list = []  # packets read, not yet decoded
    recent: list[int] = []  # pts of the packets decoded lately, for the next time of those ahead
    first_pts = None
    first_is_key = False

    def decode(packet, skip: bool):
        ctx.skip_frame = "NONREF" if skip else "DEFAULT"
        yield from packet.decode()

    def skippable(packet) -> bool:
        if packet.pts is None or first_pts is None or not first_is_key or packet.pts <= first_pts:
            return False
        if not _disposable(packet, codec, length_size, layers):
            return False
        later = [p for p in recent if p > packet.pts] + [
            q.pts for q in ahead if q.pts is not None and q.pts > packet.pts
        ]
        if not later:
            return False
        return not _needed(float(packet.pts * time_base), float(min(later) * time_base), ranges)

    try:
        for packet in container.demux(stream):
            if first_pts is None and packet.size:
                first_pts, first_is_key = packet.pts, packet.is_keyframe
            if packet.size == 0:  # end of the stream: decode what is ahead, then flush
                for q in ahead:
                    yield from decode(q, False)
                ahead.clear()
                yield from decode(packet, False)
                continue
            ahead.append(packet)
            if len(ahead) > _LOOKAHEAD:
                q = ahead.pop(0)
                yield from decode(q, skippable(q))
                if q.pts is not None:
                    recent.append(q.pts)
                    del recent[: -2 * _LOOKAHEAD]
        for q in ahead:  # a demuxer that ends without a flush packet
            yield from decode(q, False)
    finally:
        ctx.skip_frame = "DEFAULT"


def _to_rgb(frame: av.VideoFrame, width: int, height: int, reformatter=None) -> np.ndarray:
    if frame.width == width and frame.height == height:
        return frame.to_ndarray(format="rgb24")
    if reformatter is not None:
        return reformatter.reformat(frame, width, height, "rgb24", interpolation="AREA").to_ndarray()
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
