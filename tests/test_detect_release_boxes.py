"""`release-boxes:`: the release's YOLOv7 box files give the masks its get_correct_bbox + bbox_to_mask give.

The release's formula is written out here from its source (src/datasets/utils.py at ca142dd):
r = min(640 / w, 640 / h); x1 = max(floor(x1 / r), 0), y1 likewise, x2 = min(ceil(x2 / r), w),
y2 = min(ceil(y2 / r), h); mask[y1:y2, x1:x2] = 1 for each box with score > 0.5.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from emotionclip.detect import get_detector
from emotionclip.detect.release_boxes import ReleaseBoxDetector, ReleaseBoxesError
from emotionclip.transform import boxes_to_mask

# (height, width): 16:9, 4:3, square, portrait, ultra-wide, full HD-ish
SIZES = [(256, 455), (256, 341), (256, 256), (455, 256), (256, 600), (720, 1280)]


def _release_mask(boxes, width, height):
    r = min(640 / width, 640 / height)
    mask = torch.zeros(height, width)
    for b in boxes:
        x1, y1 = max(math.floor(b[0] / r), 0), max(math.floor(b[1] / r), 0)
        x2, y2 = min(math.ceil(b[2] / r), width), min(math.ceil(b[3] / r), height)
        if b[4] > 0.5:
            mask[y1:y2, x1:x2] = 1
    return mask.numpy().astype(np.uint8)


def _letterbox(width, height):
    """YOLOv7's letterbox(auto=True, stride 32): scale, scaled size, left/top pad."""
    r = min(640 / height, 640 / width)
    nw, nh = int(round(width * r)), int(round(height * r))
    dw, dh = np.mod(640 - nw, 32) / 2, np.mod(640 - nh, 32) / 2
    return r, nw, nh, int(round(dw - 0.1)), int(round(dh - 0.1))


def _yolo_boxes(rng, width, height, n):
    """Boxes as YOLO stores them: in the letterboxed frame, pad included, scores either side of 0.5."""
    _, nw, nh, left, top = _letterbox(width, height)
    out = []
    for _ in range(n):
        x1, y1 = rng.uniform(0, nw * 0.7) + left, rng.uniform(0, nh * 0.7) + top
        x2, y2 = x1 + rng.uniform(5, nw * 0.3), y1 + rng.uniform(5, nh * 0.3)
        out.append([x1, y1, x2, y2, float(rng.choice([0.3, 0.49, 0.51, 0.9]))])
    return out


def _frames(height, width, n=1):
    return np.zeros((n, height, width, 3), np.uint8)


def test_masks_equal_the_release_formula_on_several_aspect_ratios(tmp_path):
    rng = np.random.default_rng(0)
    videos, expected = {}, {}
    for i, (h, w) in enumerate(SIZES):
        frames = {f"frame_{k}.jpg": _yolo_boxes(rng, w, h, int(rng.integers(0, 4))) for k in range(5)}
        videos[f"dia{i}_utt0"] = frames
        expected[i] = frames
    path = tmp_path / "test_human_boxes.json"
    path.write_text(json.dumps(videos))
    det = get_detector(f"release-boxes:{path},fps=25")
    kept = 0
    for i, (h, w) in enumerate(SIZES):
        times = [(k + 0.5) / 25 for k in range(5)]  # the evaluation protocol's frame instants
        found = det.detect(_frames(h, w, 5), video=f"/data/MELD/test/dia{i}_utt0.mp4", times=times)
        for k, boxes in enumerate(found):
            raw = expected[i][f"frame_{k}.jpg"]
            want = _release_mask(raw, w, h)
            np.testing.assert_array_equal(boxes_to_mask(boxes, h, w), want, err_msg=f"{h}x{w} frame {k}")
            kept += int(want.any())
    assert kept >= 10  # the check saw real masks, not only empty ones


def test_the_release_offset_is_the_letterbox_pad_and_unpad_removes_it(tmp_path):
    h, w = 720, 1280  # 16:9: letterboxed to 640 x 360, padded to 384: 12 px above
    person = [400.0, 200.0, 600.0, 700.0]  # where the person is, in frame pixels
    r, _, _, left, top = _letterbox(w, h)
    assert (left, top) == (0, 12)
    stored = [person[0] * r + left, person[1] * r + top, person[2] * r + left, person[3] * r + top, 0.9]
    (tmp_path / "clip7").mkdir()
    per_video = tmp_path / "clip7" / "human_boxes.json"
    per_video.write_text(json.dumps([{"00000001.jpg": []}, {"00000002.jpg": [stored]}]))

    release = ReleaseBoxDetector(tmp_path, fps=8).detect(_frames(h, w), video="clip7.mp4", times=[1 / 8])[0]
    fixed = get_detector(f"release-boxes:{tmp_path},fps=8,unpad").detect(
        _frames(h, w), video="clip7.mp4", times=[1 / 8]
    )[0]
    # the release's box sits top / r = 24 px lower than the person (8.4 px once resized to 256)
    np.testing.assert_allclose(release[0, :4], [400, 224, 600, 720], atol=1)  # bottom clamped to the frame
    np.testing.assert_allclose(fixed[0, :4], person, atol=1)
    assert release[0, 4] == pytest.approx(0.9)
    # frame 1 (t = 0) is listed with no boxes: nobody, not an error
    empty = ReleaseBoxDetector(per_video, fps=8).detect(_frames(h, w), video="clip7", times=[0.0])[0]
    assert empty.shape == (0, 5)


def test_frame_names_follow_the_release_numbering(tmp_path, media_dir):
    # LIRIS-ACCEDE: bboxes/<movie>.mp4/human_boxes.json, second i is dump file i + 1 (1 fps)
    movie = tmp_path / "bboxes" / "ACCEDE00010.mp4"
    movie.mkdir(parents=True)
    box = [[10.0, 20.0, 200.0, 300.0, 0.8]]
    (movie / "human_boxes.json").write_text(
        json.dumps([{f"{n:08d}.jpg": (box if n == 4 else [])} for n in range(1, 6)])
    )
    det = get_detector(f"release-boxes:{tmp_path / 'bboxes'},fps=1")
    found = det.detect(_frames(360, 640, 2), video="/x/ACCEDE00010.mp4", times=[3.0, 2.0])
    assert [len(b) for b in found] == [1, 0]  # second 3 = 00000004.jpg

    # MELD / MovieGraphs: frame_<k> of the video at its own frame rate, probed from the file
    friday = media_dir / "friday.mp4"
    from emotionclip.video_io import probe_video

    fps = probe_video(friday).fps
    split = tmp_path / "all_human_boxes.json"
    split.write_text(json.dumps({"friday": {f"frame_{k}.jpg": (box if k == 30 else []) for k in range(60)}}))
    found = get_detector(f"release-boxes:{split}").detect(
        _frames(480, 640, 3), video=str(friday), times=[(29 + 0.5) / fps, (30 + 0.5) / fps, 30 / fps]
    )
    assert [len(b) for b in found] == [0, 1, 1]


def test_bad_files_and_specs_say_what_is_wrong(tmp_path):
    split = tmp_path / "dev_human_boxes.json"
    split.write_text(json.dumps({"dia1_utt2": {"frame_0.jpg": []}}))
    det = get_detector(f"release-boxes:{split},fps=24")
    with pytest.raises(ReleaseBoxesError, match=r"dev_human_boxes\.json.*no frame 'frame_3\.jpg'"):
        det.detect(_frames(64, 64), video="dia1_utt2.mp4", times=[3.5 / 24])
    with pytest.raises(ReleaseBoxesError, match="no boxes for video 'dia9_utt9.mp4'"):
        det.detect(_frames(64, 64), video="dia9_utt9.mp4", times=[0.0])
    with pytest.raises(ReleaseBoxesError, match="need video="):
        det.detect(_frames(64, 64), times=[0.0])

    dump = tmp_path / "v" / "human_boxes.json"
    dump.parent.mkdir()
    dump.write_text(json.dumps([{"00000001.jpg": [[1, 2, 3]]}]))
    with pytest.raises(ReleaseBoxesError, match="fps=R"):  # a dump's rate is not in the file
        ReleaseBoxDetector(dump).detect(_frames(64, 64), video="v", times=[0.0])
    with pytest.raises(ReleaseBoxesError, match=r"v/00000001\.jpg: boxes are not"):
        ReleaseBoxDetector(dump, fps=8).detect(_frames(64, 64), video="v", times=[0.0])

    (tmp_path / "bad.json").write_text(json.dumps({"format": "emotionclip-boxes/1", "videos": {}, "x": 1}))
    with pytest.raises(ReleaseBoxesError, match=r"bad\.json: expected the release's"):
        get_detector(f"release-boxes:{tmp_path / 'bad.json'}")
    with pytest.raises(ValueError, match="unknown option 'pad'"):
        get_detector(f"release-boxes:{split},pad")
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        get_detector(f"release-boxes:{tmp_path / 'nowhere.json'}")


def test_a_folder_of_split_files_takes_each_clip_from_its_own_split(tmp_path):
    # MELD: dia0_utt0 is in every split; the video's folder says which split it belongs to
    box = [[10.0, 20.0, 200.0, 300.0, 0.9]]
    for split, boxes in (("train", box), ("dev", []), ("test", box + box)):
        (tmp_path / f"{split}_human_boxes.json").write_text(json.dumps({"dia0_utt0": {"frame_0.jpg": boxes}}))
    det = get_detector(f"release-boxes:{tmp_path},fps=24")
    counts = {
        folder: len(det.detect(_frames(360, 640), video=f"/MELD.Raw/{folder}/dia0_utt0.mp4", times=[0.02])[0])
        for folder in ("train_splits", "dev_splits_complete", "output_repeated_splits_test")
    }
    assert counts == {"train_splits": 1, "dev_splits_complete": 0, "output_repeated_splits_test": 2}
    with pytest.raises(ReleaseBoxesError, match="several split files"):
        det.detect(_frames(360, 640), video="/elsewhere/dia0_utt0.mp4", times=[0.02])
