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
