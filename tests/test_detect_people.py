"""The person detectors on real footage (MoveNet, the default; NanoDet by name), and boxes downstream."""

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import emotionclip
from emotionclip.constants import BOX_SCORE_THRESHOLD
from emotionclip.detect import DETECTORS, get_detector, resolve_detector
from emotionclip.detect.base import rescale_scores
from emotionclip.detect.movenet import MOVENET_MODEL
from emotionclip.detect.nanodet import NANODET_MODEL, NANODET_SCORE_THRESHOLD
from emotionclip.transform import boxes_to_mask
from emotionclip.video_io import probe_video, read_frames_at, uniform_times

ROOT = Path(__file__).resolve().parents[1]
LABELS = ROOT / "benchmarks" / "data" / "detect_labels.json"


def _frames(path, n, start=0.1):
    return read_frames_at(path, uniform_times(start, probe_video(path).duration, n), short_side=256)


@pytest.fixture(scope="module")
def det():
    return get_detector("nanodet", num_threads=2)


@pytest.fixture(scope="module", params=["default", "nanodet"])
def body(request):
    """Each body detector: MoveNet (the default) and NanoDet."""
    return get_detector(request.param, num_threads=2)


def _centres(b):
    return (b[:, 0] + b[:, 2]) / 2


def _check_boxes(boxes, frames):
    assert len(boxes) == len(frames)
    h, w = frames.shape[1:3]
    for b in boxes:
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 5
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert ((b[:, 4] > BOX_SCORE_THRESHOLD) & (b[:, 4] <= 1)).all()  # all of them make the mask


@pytest.mark.parametrize("name, model", [("default", MOVENET_MODEL), ("nanodet", NANODET_MODEL)])
def test_body_detectors_and_their_files_load_offline(name, model):
    det = get_detector(name, num_threads=1)
    assert DETECTORS["default"] is DETECTORS["movenet"] and get_detector("default").name.startswith("movenet")
    assert resolve_detector(name) is resolve_detector(name)  # one detector per name
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    readme = (model.parent / "README.md").read_text()
    assert digest in readme and model.stat().st_size < 10e6  # the file assets/README.md records
    assert det.detect(np.zeros((1, 256, 341, 3), np.uint8)) == [pytest.approx(np.zeros((0, 5)))]
    assert det.detect(np.zeros((0, 32, 32, 3), np.uint8)) == []


def test_movenet_finds_friday_standing_and_seated(media_dir):
    det = get_detector("default", num_threads=2)
    frames = _frames(media_dir / "friday.mp4", 12)
    boxes = det.detect(frames)
    _check_boxes(boxes, frames)
    w = frames.shape[2]
    standing = [((_centres(b) > 0.6 * w) & (b[:, 1] < 0.3 * frames.shape[1])).any() for b in boxes]
    seated = [((_centres(b) > 0.3 * w) & (_centres(b) < 0.6 * w)).any() for b in boxes]
    assert np.mean(standing) >= 0.9, standing
    assert np.mean(seated) >= 0.5, seated


def test_friday_standing_woman_and_the_woman_seen_from_behind(det, media_dir):
    frames = _frames(media_dir / "friday.mp4", 12)
    boxes = det.detect(frames)
    _check_boxes(boxes, frames)
    w = frames.shape[2]
    standing = [((_centres(b) > 0.6 * w) & (b[:, 1] < 0.3 * frames.shape[1])).any() for b in boxes]
    behind = [(_centres(b) < 0.22 * w).any() for b in boxes]  # dark hair, back to the camera, left
    assert np.mean(standing) >= 0.9, standing
    assert np.mean(behind) >= 0.4, behind  # the face detector: 1 frame in 48
    assert np.mean([len(b) >= 2 for b in boxes]) >= 0.9


def test_intel_walkers_seen_from_behind_and_empty_frames(body, shared_dir):
    det = body
    doc = json.loads(LABELS.read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == "intel"]
    labelled = [f for f in group["frames"] if f["people"] is not None][::2]  # 20 frames, 5 empty
    frames = read_frames_at(shared_dir / group["file"], [f["t"] for f in labelled], short_side=256)
    found = [len(b) for b in det.detect(frames)]
    people = [f["people"] for f in labelled]
    hits = [n > 0 for n, p in zip(found, people) if p > 0]
    assert np.mean(hits) >= 0.9, list(zip(people, found))
    assert [n for n, p in zip(found, people) if p == 0] == [0] * people.count(0)


def test_one_person_in_cremad_and_nobody_in_flower(body, media_dir):
    det = body
    for path in sorted((media_dir / "cremad").glob("*.flv")):
        frames = _frames(path, 2, start=0.5)
        boxes = det.detect(frames)
        _check_boxes(boxes, frames)
        assert [len(b) for b in boxes] == [1, 1], path.name
        # head and shoulders, centred: a body box, not a face box
        b = boxes[0][0]
        assert abs((b[0] + b[2]) / 2 - frames.shape[2] / 2) < 0.15 * frames.shape[2]
        assert b[3] - b[1] > 0.6 * frames.shape[1]
    flower = _frames(media_dir / "flower.mp4", 8)
    assert [len(b) for b in det.detect(flower)] == [0] * 8


def test_frames_one_by_one_batched_pickled_and_portrait(body, media_dir):
    det = body
    frames = _frames(media_dir / "cremad" / "1001_DFA_HAP_XX.flv", 3)
    whole = det.detect(frames)
    for i, b in enumerate(whole):
        np.testing.assert_allclose(det.detect(frames[i : i + 1])[0], b, atol=1e-4)
    clone = pickle.loads(pickle.dumps(det))  # prepare --workers sends it to processes
    np.testing.assert_allclose(clone.detect(frames[:1])[0], whole[0], atol=1e-4)
    portrait = np.zeros((1, 600, 341, 3), np.uint8)  # a tall frame: boxes in its own pixels
    portrait[:, 200:456] = frames[:1]
    (box,) = det.detect(portrait)[0]
    np.testing.assert_allclose(box[:4] - [0, 200, 0, 200], whole[0][0, :4], atol=12)


def test_scores_are_rescaled_to_the_release_threshold(media_dir):
    raw = np.array([0.0, 0.15, NANODET_SCORE_THRESHOLD, 0.65, 1.0], np.float32)
    np.testing.assert_allclose(
        rescale_scores(raw, NANODET_SCORE_THRESHOLD), [0, 0.25, 0.5, 0.75, 1.0], atol=1e-6
    )
    frames = _frames(media_dir / "friday.mp4", 2)
    a = get_detector("nanodet", num_threads=1).detect(frames)
    b = get_detector("nanodet", num_threads=1, rescale=False).detect(frames)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x[:, :4], y[:, :4])
        assert (y[:, 4] > NANODET_SCORE_THRESHOLD).all()
        np.testing.assert_allclose(x[:, 4], rescale_scores(y[:, 4], NANODET_SCORE_THRESHOLD), rtol=1e-6)


@pytest.mark.parametrize("name, label", [("default", "MoveNet"), ("nanodet", "NanoDet")])
def test_bad_model_files_are_named(tmp_path, name, label):
    with pytest.raises(FileNotFoundError, match=f"nope.onnx: {label} model file not found"):
        get_detector(name, model_path=tmp_path / "nope.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.onnx: not a loadable ONNX model"):
        get_detector(name, model_path=junk).detect(np.zeros((1, 32, 32, 3), np.uint8))
    truncated = tmp_path / "truncated.onnx"  # a download or copy cut short
    shipped = MOVENET_MODEL if name == "default" else NANODET_MODEL
    truncated.write_bytes(shipped.read_bytes()[: shipped.stat().st_size // 3])
    with pytest.raises(ValueError, match="truncated.onnx: not a loadable ONNX model"):
        get_detector(name, model_path=truncated).detect(np.zeros((1, 32, 32, 3), np.uint8))
    other = NANODET_MODEL if name == "default" else MOVENET_MODEL  # the other detector's model
    with pytest.raises(ValueError, match=f"{other.name}: .* not {label}"):
        get_detector(name, model_path=other).detect(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="multiple of 32"):
        get_detector(name, size=300)
    with pytest.raises(ValueError, match="uint8 RGB"):
        get_detector(name).detect(np.zeros((1, 32, 32, 3), np.float32))


def test_boxes_make_the_subject_mask_of_a_training_batch(media_dir, tmp_path):
    from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
    from emotionclip.shards.reader import make_train_loader
    from prepare_support import KeywordScorer

    src = tmp_path / "in"
    src.mkdir()
    for name in ("friday.mp4", "friday.vtt"):
        os.symlink(media_dir / name, src / name)
    out = tmp_path / "out"
    summary = prepare(src, out, PrepareConfig(scorer=KeywordScorer(), filter=ClipFilter(max_neutral=None)))
    assert summary["ok"] == 1
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["detector"].startswith("movenet") and manifest["track"]
    batch = next(iter(make_train_loader(out, batch_size=1, shuffle_buffer=0)))
    mask = batch["video_mask"]
    assert mask.shape == (1, 8, 224, 224) and mask.dtype == torch.bool
    # several people boxed: the union covers a large part of most frames, never all of a frame
    frac = mask.float().mean((0, 2, 3))
    assert (frac > 0.3).float().mean() >= 0.75 and (frac < 0.98).all(), frac
    # share of the clip's frames with a person (people in every frame of friday; NanoDet's frame
    # threshold missed 5 of its 49 frames at 8 fps)
    assert batch["has_person"][0] >= 0.85


def test_boxes_reach_the_analysis_report(media_dir, det):
    from emotionclip.analyze import analyze_video

    model = emotionclip.create_model("tiny", video_len=4, head_layers=1)
    table = analyze_video(model, media_dir / "friday.mp4", window=2.0, stride=2.0, detector=det)
    assert len(table) >= 2 and table["has_person"].all()
    boxes = table["boxes"].iloc[0]
    flat = np.asarray(json.loads(boxes) if isinstance(boxes, str) else boxes, dtype=object)
    assert flat.size > 0
    # the same boxes make the subject mask the model saw
    frame = _frames(media_dir / "friday.mp4", 1)
    found = det.detect(frame)[0]
    assert boxes_to_mask(found, 256, 341).mean() > 0.3


def test_conversion_stores_float16_weights_losslessly(tmp_path):
    """scripts/convert_detector.py's weight step: float16-exact weights shrink, outputs stay identical."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import sys

    from onnx import TensorProto, helper, numpy_helper

    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import convert_detector
    finally:
        sys.path.pop(0)

    def model(w):
        graph = helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
            "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8, 8])],
            [numpy_helper.from_array(w, "w")],
        )
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])

    w = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float16).astype(np.float32)
    x = np.random.default_rng(1).random((1, 3, 8, 8), np.float32)
    plain, half = model(w), model(w)
    convert_detector._store_float16(half)
    onnx.checker.check_model(half)
    assert half.graph.initializer[0].data_type == TensorProto.FLOAT16
    run = lambda m: ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(half), run(plain))
    with pytest.raises(ValueError, match="not exactly float16"):
        convert_detector._store_float16(model(w + 1e-4))


def test_the_frame_threshold_gates_whole_frames(media_dir):
    frames = _frames(media_dir / "friday.mp4", 6)
    loose = get_detector("nanodet", num_threads=1, frame_threshold=NANODET_SCORE_THRESHOLD, rescale=False)
    strict = get_detector("nanodet", num_threads=1, frame_threshold=0.99, rescale=False)
    boxes = loose.detect(frames)
    assert all(len(b) for b in boxes)  # friday: people in every frame
    assert all(len(b) == 0 for b in strict.detect(frames))  # no frame's best box reaches 0.99
    default = get_detector("nanodet", num_threads=1, rescale=False)
    for b, d in zip(boxes, default.detect(frames), strict=True):  # the gate keeps all boxes or none
        assert len(d) == 0 or np.allclose(b, d, atol=1e-5)
    with pytest.raises(ValueError, match="frame_threshold"):
        get_detector("nanodet", score_threshold=0.5, frame_threshold=0.4)
