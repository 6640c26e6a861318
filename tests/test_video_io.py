"""PyAV decoding: sampling instants, seeking, and clear errors."""

import glob

import av
import numpy as np
import pytest

from emotionclip.video_io import VideoError, iter_frames, probe_video, read_frames_at, uniform_times

FPS, SECONDS = 10, 4


@pytest.fixture(scope="module")
def counter_video(tmp_path_factory):
    """Frame k is uniformly grey with level 6k, so a decoded frame tells its own index."""
    path = tmp_path_factory.mktemp("video") / "counter.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"g": "5", "crf": "0"}  # key frame every 10: seeking is exercised
        for k in range(FPS * SECONDS):
            img = np.full((48, 64, 3), 6 * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _index(frame: np.ndarray) -> int:
    return int(round(frame.mean() / 6))


def test_probe(counter_video):
    info = probe_video(counter_video)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(FPS)
    assert info.duration == pytest.approx(SECONDS, abs=0.05)
    assert info.num_frames == FPS * SECONDS


def test_iter_frames_samples_the_frame_showing_at_each_instant(counter_video):
    got = list(iter_frames(counter_video, start=1.3, end=2.3, fps=8))
    times = [t for t, _ in got]
    assert times == pytest.approx([1.3 + k / 8 for k in range(8)])
    for t, frame in got:  # frame k shows during [k/10, (k+1)/10)
        assert _index(frame) == int(t * FPS + 1e-6), t


def test_iter_frames_all_frames_and_resize(counter_video):
    got = list(iter_frames(counter_video, start=2.0, end=3.0, short_side=24))
    assert [_index(f) for _, f in got] == list(range(20, 30))
    assert got[0][1].shape == (24, 32, 3)


def test_read_frames_at(counter_video):
    times = uniform_times(0.5, 3.5, 8)
    frames = read_frames_at(counter_video, times)
    assert frames.shape == (8, 48, 64, 3)
    assert [_index(f) for f in frames] == [int(t * FPS + 1e-6) for t in times]
    # instants past the end show the last frame
    assert _index(read_frames_at(counter_video, [3.99, 10.0])[1]) == FPS * SECONDS - 1


def test_flv_from_the_first_frame(media_dir):
    flv = sorted(glob.glob(str(media_dir / "cremad" / "*.flv")))[0]
    d = probe_video(flv).duration
    assert read_frames_at(flv, uniform_times(0, d, 48)).shape[0] == 48
    times = [t for t, _ in iter_frames(flv, 0.0, None, fps=8)]
    assert times[:3] == [0.0, 0.125, 0.25]
    assert abs(len(times) - d * 8) <= 2  # the container's duration and the last frame differ slightly


def test_errors_name_the_file(tmp_path, counter_video):
    with pytest.raises(VideoError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="is a directory"):
        probe_video(tmp_path)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoError, match="garbage.mp4"):
        probe_video(garbage)
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(counter_video.read_bytes()[:2000])
    with pytest.raises(VideoError, match="truncated.mp4"):
        list(iter_frames(truncated, fps=8))
    audio = tmp_path / "audio.wav"
    with av.open(str(audio), "w") as out:
        stream = out.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), dtype=np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            out.mux(packet)
    with pytest.raises(VideoError, match="no video stream"):
        probe_video(audio)
    with pytest.raises(ValueError, match="sorted"):
        read_frames_at(counter_video, [2.0, 1.0])
