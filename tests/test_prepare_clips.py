"""Which frames a clip stores: the release's grid (create_index.py) by default."""

import pytest

from emotionclip.prepare.clips import ClipFilter


def test_video_grid_is_the_releases_frame_indices():
    # create_index.py: frames ceil(start * 8) .. floor(end * 8) of the video's 8 fps frames, both included
    first, stop, n = ClipFilter().frame_range(1.3, 3.2)
    assert (first, n) == (11 / 8, 25 - 11 + 1)
    assert 25 / 8 < stop <= 26 / 8  # the instant 25/8 is inside, 26/8 is not
    assert ClipFilter().frame_range(3.0, 6.0)[2] == 25  # on the grid: both ends are frames


def test_clip_grid_counts_instants_from_the_start():
    assert ClipFilter(frame_grid="clip").frame_range(1.3, 3.2) == pytest.approx((1.3, 3.2, 16))
    with pytest.raises(ValueError, match="frame_grid"):
        ClipFilter(frame_grid="nonsense")


def test_release_grid_shows_frame_n_at_n_minus_one_over_fps():
    # download_videos.py's ffmpeg dump numbers files from 1: file n shows t = (n - 1) / 8
    first, stop, n = ClipFilter(frame_grid="release").frame_range(1.3, 3.2)
    assert (first, n) == (10 / 8, 15)  # the same frame numbers 11..25, one frame earlier
    assert 24 / 8 < stop <= 25 / 8
    assert ClipFilter(frame_grid="release").frame_range(0.0, 3.0) == (0.0, 0.0, 0)  # no file 0: dropped
    assert ClipFilter(frame_grid="release").frame_range(0.05, 3.0)[::2] == (0.0, 24)  # file 1 shows t = 0


def test_a_sentence_past_the_video_end_is_cut_or_dropped_as_the_release():
    from collections import Counter

    from emotionclip.prepare.clips import select_candidates
    from emotionclip.prepare.subtitles import Sentence

    sentences = [Sentence(1.0, 4.0, "inside the video"), Sentence(6.0, 11.0, "running past the end")]
    stats = Counter()
    cut = select_candidates(sentences, 9.5, ClipFilter(), stats)
    assert [(c.start, c.end) for c in cut] == [(1.0, 4.0), (6.0, 9.5)]
    stats = Counter()
    dropped = select_candidates(sentences, 9.5, ClipFilter(past_end="drop"), stats)
    assert [(c.start, c.end) for c in dropped] == [(1.0, 4.0)] and stats["past_video_end"] == 1
    with pytest.raises(ValueError, match="past_end"):
        ClipFilter(past_end="keep")
