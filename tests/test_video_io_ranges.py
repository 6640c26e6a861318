"""decode_ranges: a video's ranges in few forward passes, each range getting exactly the frames
(instants and pixels) its own seek with iter_frames gives, and its own seek where a pass could differ."""

from __future__ import annotations

import av
import numpy as np
import pytest

from emotionclip.video_io import _needed, _unit_types, decode_ranges, iter_frames, plan_passes

FPS, SECONDS = 10, 6


def _counter_video(path, codec: str, options: dict):
    """Frame k is uniformly grey with level 4k (key frame every 5 frames: every 0.5 s)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = options
        for k in range(FPS * SECONDS):
            img = np.full((48, 64, 3), 4 * k, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory):  # x264's key frames are IDR: a pass may continue through them
    return _counter_video(tmp_path_factory.mktemp("v") / "idr.mp4", "libx264", {"g": "5", "crf": "0"})


@pytest.fixture(scope="module")
def bframes_video(tmp_path_factory):  # non-reference B frames (nal_ref_idc 0) between the P frames
    params = "keyint=10:min-keyint=10:scenecut=0:bframes=3:b-adapt=0:b-pyramid=none"
    return _counter_video(
        tmp_path_factory.mktemp("v") / "b.mp4", "libx264", {"x264-params": params, "crf": "18"}
    )


@pytest.fixture(scope="module")
def mpeg4_video(tmp_path_factory):  # a codec whose key frames are not known to be independent
    return _counter_video(
        tmp_path_factory.mktemp("v") / "mpeg4.mp4",
        "mpeg4",
        {"g": "5", "qscale": "1", "sc_threshold": "1000000000"},
    )


def _same_as_seeking(path, ranges, fps=8.0, short_side=None):
    got: dict[int, list] = {i: [] for i in range(len(ranges))}
    complete = []
    for i, t, frame in decode_ranges(path, ranges, fps, short_side):
        assert i not in complete
        if frame is None:
            complete.append(i)
        else:
            got[i].append((t, frame))
    assert sorted(complete) == list(range(len(ranges)))
    for i, (start, end) in enumerate(ranges):
        want = list(iter_frames(path, start, end, fps=fps, short_side=short_side))
        assert [t for t, _ in got[i]] == [t for t, _ in want], (start, end)  # bit for bit, not approx
        for (t, a), (_, b) in zip(got[i], want):
            assert np.array_equal(a, b), (start, end, t)
    return plan_passes(path, ranges)


# nested, overlapping, from the start (no seek) and seeking onto the first key frame, past a gap,
# running past the end of the stream, empty
RANGES = [(0.2, 1.3), (0.4, 0.9), (1.05, 1.35), (1.2, 1.6), (1.55, 1.9), (3.4, 4.1), (5.2, 7.0), (4.0, 4.0)]


def test_ranges_share_a_pass_through_idr_key_frames(h264_video):
    passes = _same_as_seeking(h264_video, RANGES, short_side=24)
    assert sorted(i for p in passes for i in p) == list(range(len(RANGES)))
    assert passes[0] == [0, 1, 2, 3, 4]  # through the IDR frames at 0.5, 1.0 and 1.5 s
    assert [6] in passes  # past a gap: its own seek
    assert len(passes) < len(RANGES)


def test_key_frames_not_known_independent_get_their_own_seek(mpeg4_video):
    passes = _same_as_seeking(mpeg4_video, RANGES)
    # the same key frame (1.0 s) joins; the key frame at 1.5 s inside the pass does not
    assert [2, 3] in passes
    assert [4] in passes


def test_unit_types_length_prefixed_and_annex_b():
    idr, sps = bytes([0x65, 1, 2]), bytes([0x67, 9])
    assert _unit_types(len(sps).to_bytes(4, "big") + sps + len(idr).to_bytes(4, "big") + idr, "h264", 4) == [
        7,
        5,
    ]
    assert _unit_types(b"\0\0\0\1" + sps + b"\0\0\1" + idr, "h264", 4) == [7, 5]
    cra = bytes([21 << 1, 1, 7])
    assert _unit_types(len(cra).to_bytes(4, "big") + cra, "hevc", 4) == [21]
    assert _unit_types(b"\0\0\0\x09junk", "h264", 4) == []  # a length past the packet: unknown


def test_popeye_hevc_open_gop_passes_through_cra_key_frames(media_dir):
    """Popeye: 1440x1074 HEVC, CRA key frames at 10.0 and 12.38 s (open GOP: their leading
    pictures differ after a seek; the pictures shown after them do not)."""
    path = media_dir / "popeye" / "T03-4_pgs.mkv"
    ranges = [(9.3, 10.6), (9.9, 12.6), (12.2, 13.1), (12.5, 13.0)]
    passes = _same_as_seeking(path, ranges, short_side=128)
    assert passes == [[0, 1, 2, 3]]


def test_frames_no_sample_shows_and_nothing_references_go_undecoded(bframes_video, monkeypatch):
    from emotionclip import video_io

    decided = []

    def needed(*args):
        decided.append(video_io._needed.__wrapped__(*args))
        return decided[-1]

    needed.__wrapped__ = video_io._needed
    monkeypatch.setattr(video_io, "_needed", needed)
    _same_as_seeking(bframes_video, [(0.1, 2.9), (3.05, 5.0), (3.3, 3.6)], fps=2.0)
    _same_as_seeking(bframes_video, RANGES, fps=8.0)
    assert False in decided  # x264's non-reference B frames between the 2 fps instants were skipped


def test_needed_is_the_samplers_rule():
    step = 1 / 8
    ranges = [(0.25, 1.0, step)]  # instants 0.25, 0.375, ...
    assert _needed(0.25, 0.25 + 1 / 24, ranges)  # the frame at the instant shows it
    assert not _needed(0.25 - 1 / 24, 0.25, ranges)  # the frame before it does not
    # the sampler's tolerance: a frame next shown 2e-6 s after the instant still shows it, not 0.5e-6 s
    assert _needed(0.25 - 1 / 24, 0.25 + 2e-6, ranges)
    assert not _needed(0.25 - 1 / 24, 0.25 + 0.5e-6, ranges)
    assert not _needed(1.01, 1.1, ranges)  # after the range
    assert _needed(0.0, 0.3, ranges)  # a frame that shows until past the first instant
