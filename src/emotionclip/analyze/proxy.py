"""A small H.264 MP4 copy of a video the browser cannot play (FLV, HEVC, AVI...), for the HTML report."""

from __future__ import annotations

import logging
from fractions import Fraction
from pathlib import Path

import av

from ..video_io import VideoError

logger = logging.getLogger(__name__)

# what Chromium, Firefox and Safari all play from a local file
_PLAYABLE_CONTAINERS = {"mp4": ("h264", "av1"), "webm": ("vp8", "vp9", "av1")}
_PLAYABLE_AUDIO = {"aac", "mp3", "mp3float", "opus", "libopus", "vorbis", "libvorbis"}
PROXY_HEIGHT = 360
PROXY_MAX_FPS = 30


def browser_playable(path: str | Path) -> bool:
    """Whether an HTML5 ``<video>`` plays ``path`` as it is (MP4 with H.264, WebM with VP8/VP9/AV1)."""
    suffix = Path(path).suffix.lower()
    kind = "mp4" if suffix in (".mp4", ".m4v", ".mov") else "webm" if suffix == ".webm" else None
    if kind is None:
        return False
    try:
        with av.open(str(path), metadata_errors="ignore") as c:
            video = [s.codec_context.name for s in c.streams.video]
            audio = [s.codec_context.name for s in c.streams.audio]
    except (av.error.FFmpegError, OSError):
        return False
    return (
        len(video) >= 1
        and video[0] in _PLAYABLE_CONTAINERS[kind]
        and all(a in _PLAYABLE_AUDIO for a in audio[:1])
    )


def _even(x: float) -> int:
    return max(2, int(round(x / 2)) * 2)


def write_proxy(source: str | Path, target: str | Path, height: int = PROXY_HEIGHT) -> None:
    """Re-encode ``source`` as H.264 (+ AAC when it has sound) at most ``height`` pixels high into ``target``.

    Frames keep their timestamps, so the report's times line up with the original video."""
    try:
        src = av.open(str(source), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError) as e:
        raise VideoError(source, f"cannot open to make a browser copy ({e})") from e
    with src, av.open(str(target), "w", format="mp4", options={"movflags": "+faststart"}) as dst:
        vin = src.streams.video[0]
        ain = src.streams.audio[0] if src.streams.audio else None
        rate = min(PROXY_MAX_FPS, max(1, round(float(vin.average_rate or 25))))
        h = min(height, vin.codec_context.height)
        w = vin.codec_context.width * h / vin.codec_context.height
        vout = dst.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = _even(w), _even(h), "yuv420p"
        vout.options = {"crf": "28", "preset": "veryfast"}
        vout.codec_context.time_base = Fraction(1, rate)
        aout = resampler = None
        if ain is not None:
            aout = dst.add_stream("aac", rate=44100, layout="stereo")
            aout.bit_rate = 96_000
            resampler = av.AudioResampler(format="fltp", layout="stereo", rate=44100)
        streams = [vin] + ([ain] if ain is not None else [])
        last_pts = -1
        try:
            for packet in src.demux(*streams):
                for frame in packet.decode():
                    if frame.time is None:
                        continue
                    if isinstance(frame, av.VideoFrame):
                        pts = int(round(frame.time * rate))
                        if pts <= last_pts:
                            continue  # two source frames on one proxy frame: keep the first
                        last_pts = pts
                        out = frame.reformat(vout.width, vout.height, "yuv420p")
                        out.pts, out.time_base = pts, Fraction(1, rate)
                        dst.mux(vout.encode(out))
                    else:
                        for chunk in resampler.resample(frame):
                            chunk.pts = None
                            dst.mux(aout.encode(chunk))
        except av.error.FFmpegError as e:  # a truncated tail: keep what decoded
            logger.warning("%s: browser copy stops early (%s)", source, e)
        dst.mux(vout.encode(None))
        if aout is not None:
            dst.mux(aout.encode(None))
    if last_pts < 0:
        raise VideoError(source, "no frame could be decoded for the browser copy")
