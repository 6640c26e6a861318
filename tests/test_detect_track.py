"""People followed through time (detect.track): gaps filled, ids kept, on synthetic boxes and real clips."""

import json

import numpy as np
import pytest

from emotionclip.detect import BoxTracker, get_detector, track_boxes
from emotionclip.detect.json_boxes import JsonBoxDetector, write_boxes_json
from emotionclip.video_io import probe_video, read_frames_at, uniform_times

LEFT = np.array([[10, 10, 50, 90, 0.9]], np.float32)
RIGHT = np.array([[200, 10, 240, 90, 0.8]], np.float32)
NOBODY = np.zeros((0, 5), np.float32)


def _ids(frames):
    return [sorted(int(t) for t in b[:, 5]) for b in frames]


def test_a_person_missed_in_one_frame_keeps_an_interpolated_box():
    frames = [
        np.concatenate([LEFT, RIGHT]),
        LEFT + [4, 0, 4, 0, 0],
        RIGHT,
        np.concatenate([LEFT + [8, 0, 8, 0, 0], RIGHT]),
    ]
    out = track_boxes(frames)
    assert [b.shape[1] for b in out] == [6] * 4 and _ids(out) == [[1, 2]] * 4
    left_in_gap = out[2][out[2][:, 5] == 1][0]
    np.testing.assert_allclose(left_in_gap[:5], [16, 10, 56, 90, 0.9], atol=1e-5)  # halfway, its score
    right_in_gap = out[1][out[1][:, 5] == 2][0]
    np.testing.assert_allclose(right_in_gap[:5], RIGHT[0], atol=1e-5)


def test_longer_absences_keep_the_id_without_boxes_and_ids_count_in_order_of_appearance():
    out = track_boxes([LEFT, NOBODY, NOBODY, LEFT, np.concatenate([LEFT, RIGHT])])
    assert _ids(out) == [[1], [], [], [1], [1, 2]]  # the same person, nothing invented across two frames
    assert _ids(track_boxes([LEFT, NOBODY, NOBODY, LEFT], max_gap=2)) == [[1]] * 4
    gone = track_boxes([LEFT, NOBODY, NOBODY, LEFT], max_lost=1)
    assert _ids(gone) == [[1], [], [], [2]]  # away too long: a new track


def test_ids_follow_overlap_not_order_and_the_stream_matches_the_clip():
    a, b = LEFT, RIGHT
    frames = [np.concatenate([a, b]), np.concatenate([b + [5, 0, 5, 0, 0], a + [5, 0, 5, 0, 0]])]
    out = track_boxes(frames)
    assert out[1][0, 5] == 2 and out[1][1, 5] == 1  # listed the other way round, same people
    tracker, streamed = BoxTracker(), []
    for f in frames:
        streamed += tracker.push(f)
    assert len(streamed) == 1  # the last frame waits: a later detection could still fill a gap
    streamed += tracker.flush()
    for x, y in zip(streamed, out, strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="max_gap"):
        BoxTracker(max_gap=-1)
    with pytest.raises(ValueError, match="max_lost"):
        BoxTracker(max_gap=3, max_lost=2)


@pytest.fixture(scope="module")
def friday_boxes(media_dir):
    path = media_dir / "friday.mp4"
    frames = read_frames_at(path, uniform_times(0.1, probe_video(path).duration, 24), short_side=256)
    return frames, get_detector("default", num_threads=2).detect(frames)


def test_ids_hold_on_a_real_scene_and_a_dropped_detection_is_filled(friday_boxes):
    frames, boxes = friday_boxes
    tracked = track_boxes(boxes)
    per_id = {}
    for b in tracked:
        for t in b[:, 5].astype(int):
            per_id[t] = per_id.get(t, 0) + 1
    # friday: the standing woman and the seated woman in (nearly) every frame, each under one id
    steady = [t for t, n in per_id.items() if n >= 0.8 * len(frames)]
    assert len(steady) >= 2, per_id
    assert len(per_id) <= len(steady) + 2, per_id  # a flicker may start a short track, not many
    k = 10
    dropped = [b if i != k else b[:0] for i, b in enumerate(boxes)]
    refilled = track_boxes(dropped)
    assert set(refilled[k][:, 5].astype(int)) >= set(steady) & set(tracked[k - 1][:, 5].astype(int)) & set(
        tracked[k + 1][:, 5].astype(int)
    )
    for t in set(refilled[k][:, 5].astype(int)):  # between the boxes around it
        before, after = (refilled[i][refilled[i][:, 5] == t][0] for i in (k - 1, k + 1))
        np.testing.assert_allclose(refilled[k][refilled[k][:, 5] == t][0, :4], (before[:4] + after[:4]) / 2)


def test_intel_walkers_keep_an_id_while_in_view(shared_dir):
    path = shared_dir / "media" / "intel" / "one-by-one-person-detection.mp4"
    times = np.arange(7.8, 18.0, 0.5)  # one woman, seen from behind, walking away
    frames = read_frames_at(path, times.tolist(), short_side=256)
    tracked = track_boxes(get_detector("default", num_threads=2).detect(frames))
    ids = [int(b[0, 5]) for b in tracked if len(b)]
    assert len(ids) >= 0.9 * len(times) and len(set(ids)) == 1, ids


def test_the_analysis_stream_carries_track_ids_and_no_track_does_not(media_dir):
    import emotionclip
    from emotionclip.analyze import embed_video

    model = emotionclip.create_model("tiny", video_len=4, head_layers=1)
    tracked = embed_video(model, media_dir / "friday.mp4", window=2.0, stride=2.0)
    plain = embed_video(model, media_dir / "friday.mp4", window=2.0, stride=2.0, track=False)
    frames_t = [b for w in tracked.boxes for b in w]
    frames_p = [b for w in plain.boxes for b in w]
    assert all(b.shape[1] == 6 for b in frames_t if len(b)) and all(b.shape[1] == 5 for b in frames_p)
    ids = {int(t) for b in frames_t for t in b[:, 5]}
    assert min(ids) == 1 and len(ids) <= 4, ids  # ids run across windows: one per person
    for a, b in zip(frames_t, frames_p):  # tracking only adds boxes (filled gaps), never moves them
        assert len(a) >= len(b)


def test_boxes_json_keeps_track_ids_and_old_files_still_load(tmp_path):
    frames = np.zeros((2, 100, 300, 3), np.uint8)
    tracked = track_boxes([LEFT, np.concatenate([LEFT, RIGHT])])
    write_boxes_json(tmp_path / "b.json", {"v.mp4": (300, 100, [0.0, 0.5], tracked)}, detector="test")
    doc = json.loads((tmp_path / "b.json").read_text())
    assert (
        doc["format"] == "emotionclip-boxes/2" and len(doc["videos"]["v.mp4"]["frames"][1]["boxes"][1]) == 6
    )
    back = JsonBoxDetector(tmp_path / "b.json").detect(frames, video="v.mp4", times=[0.0, 0.5])
    np.testing.assert_allclose(back[1], tracked[1], atol=0.01)
    old = {
        "format": "emotionclip-boxes/1",
        "videos": {
            "v.mp4": {"width": 600, "height": 200, "frames": [{"t": 0, "boxes": [[20, 20, 100, 180, 0.9]]}]}
        },
    }
    (tmp_path / "old.json").write_text(json.dumps(old))
    (b,) = JsonBoxDetector(tmp_path / "old.json").detect(frames[:1], video="v.mp4", times=[0.0])
    np.testing.assert_allclose(b, [[10, 10, 50, 90, 0.9]])  # five columns, rescaled to the frames
    (tmp_path / "bad.json").write_text(json.dumps({**old, "format": "emotionclip-boxes/9"}))
    with pytest.raises(ValueError, match="bad.json: expected .*emotionclip-boxes/2"):
        JsonBoxDetector(tmp_path / "bad.json")


def test_prepare_stores_track_ids_and_no_track_stores_frames_alone(media_dir, tmp_path):
    import os
    import tarfile

    from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
    from prepare_support import KeywordScorer

    src = tmp_path / "in"
    src.mkdir()
    for name in ("friday.mp4", "friday.vtt"):
        os.symlink(media_dir / name, src / name)
    columns = {}
    for track in (True, False):
        out = tmp_path / f"out-{track}"
        config = PrepareConfig(track=track, scorer=KeywordScorer(), filter=ClipFilter(max_neutral=None))
        assert prepare(src, out, config)["ok"] == 1
        assert json.loads((out / "manifest.json").read_text())["track"] is track
        with tarfile.open(next(out.glob("*.tar"))) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("boxes.json"))
            boxes = json.loads(tar.extractfile(member).read())
        columns[track] = {len(b) for frame in boxes for b in frame}
    assert columns == {True: {6}, False: {5}}


def test_evaluation_cache_keys_tell_tracked_boxes_apart():
    from emotionclip.evaluate.features import Protocol

    assert Protocol(track=False).key() == Protocol().key()  # no detector, no boxes to follow
    assert Protocol(detector="default").key() != Protocol(detector="default", track=False).key()
