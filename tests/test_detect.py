import pickle

import numpy as np
import pytest
import torch
import torchvision

from emotionclip.detect import PersonDetector, get_detector
from emotionclip.detect.faces import BlazeFaceSubjectDetector
from emotionclip.detect.json_boxes import JsonBoxDetector, JsonBoxesError, write_boxes_json
from emotionclip.detect.torchvision_coco import TorchvisionPersonDetector, _load_state_dict
from emotionclip.video_io import probe_video, read_frames_at, uniform_times


def _frames(path, n):
    return read_frames_at(path, uniform_times(0, probe_video(path).duration, n), short_side=256)


@pytest.fixture(scope="module")
def faces_detector():
    return get_detector("faces")


def _check_boxes(boxes, frames):
    assert len(boxes) == len(frames)
    h, w = frames.shape[1:3]
    for b in boxes:
        assert b.dtype == np.float32 and b.ndim == 2 and b.shape[1] == 5
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert ((b[:, 4] > 0.5) & (b[:, 4] <= 1)).all()


def test_faces_finds_people_in_friday(faces_detector, media_dir):
    frames = _frames(media_dir / "friday.mp4", 16)
    boxes = faces_detector.detect(frames)
    _check_boxes(boxes, frames)
    counts = np.array([len(b) for b in boxes])
    assert (counts >= 1).all(), counts
    assert (counts >= 2).mean() >= 0.5, counts  # the third woman faces away from the camera
    # the standing woman (right of centre, upper half) is found in every frame
    centres_x = [(b[:, 0] + b[:, 2]) / 2 for b in boxes]
    assert all(((cx > frames.shape[2] * 0.5) & (cx < frames.shape[2] * 0.85)).any() for cx in centres_x)


def test_faces_finds_the_actor_in_cremad(faces_detector, media_dir):
    for path in sorted((media_dir / "cremad").glob("*.flv")):
        frames = _frames(path, 4)
        boxes = faces_detector.detect(frames)
        _check_boxes(boxes, frames)
        assert [len(b) for b in boxes] == [1] * 4, path.name
        # the actor sits centred: the subject box covers the middle of the frame
        cx = (boxes[0][0, 0] + boxes[0][0, 2]) / 2
        assert abs(cx - frames.shape[2] / 2) < frames.shape[2] * 0.2


def test_faces_handles_portrait_frames(media_dir):
    """Portrait frames take the top/bottom tiles; boxes come back in the padded frame's pixels."""
    frame = _frames(media_dir / "cremad" / "1001_DFA_NEU_XX.flv", 1)
    portrait = np.zeros((1, 700, 341, 3), np.uint8)
    portrait[:, 300:556] = frame
    faces = get_detector("faces", expand=None)
    (landscape_face,), (portrait_face,) = faces.detect(frame)[0], faces.detect(portrait)[0]
    np.testing.assert_allclose(portrait_face[:4] - [0, 300, 0, 300], landscape_face[:4], atol=4)


def test_faces_finds_nobody_in_flower(faces_detector, media_dir):
    frames = _frames(media_dir / "flower.mp4", 16)
    assert [len(b) for b in faces_detector.detect(frames)] == [0] * 16


def test_faces_face_boxes_grow_to_subject_boxes(media_dir):
    frames = _frames(media_dir / "cremad" / "1001_DFA_NEU_XX.flv", 1)
    face = get_detector("faces", expand=None).detect(frames)[0][0]
    subject = get_detector("faces").detect(frames)[0][0]
    assert subject[0] < face[0] and subject[2] > face[2] and subject[1] < face[1] and subject[3] > face[3]
    assert subject[3] - face[3] > (face[3] - face[1])  # reaches well below the chin
    assert subject[4] == pytest.approx(face[4])


def test_faces_detector_batches_and_pickles(faces_detector, media_dir):
    frames = _frames(media_dir / "cremad" / "1001_DFA_HAP_XX.flv", 5)
    whole = faces_detector.detect(frames)
    small = BlazeFaceSubjectDetector(batch_size=3)  # 1 frame x 3 views per model call
    for a, b in zip(whole, small.detect(frames)):
        np.testing.assert_allclose(a, b, atol=1e-3)
    clone = pickle.loads(pickle.dumps(faces_detector))  # prepare --workers sends it to processes
    np.testing.assert_allclose(clone.detect(frames[:1])[0], whole[0], atol=1e-3)
    assert faces_detector.detect(np.zeros((0, 32, 32, 3), np.uint8)) == []


def test_bad_inputs_are_named(tmp_path, faces_detector):
    with pytest.raises(ValueError, match="uint8 RGB"):
        faces_detector.detect(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        faces_detector.detect(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope.tflite"):
        get_detector("faces", model_path=tmp_path / "nope.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.tflite"):
        get_detector("faces", model_path=junk).detect(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="unknown person detector"):
        get_detector("yolo")
    with pytest.raises(ValueError, match="unknown torchvision detector"):
        get_detector("torchvision:resnet18")


# --- torchvision -----------------------------------------------------------------------------------

ARCH = "ssdlite320_mobilenet_v3_large"  # the smallest torchvision detector


def test_torchvision_detector_from_local_weights(tmp_path):
    torch.manual_seed(0)
    ref = torchvision.models.detection.ssdlite320_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=91
    )
    with torch.no_grad():  # make "person" (COCO id 1) the top class everywhere so boxes come out and
        for conv in ref.head.classification_head.module_list:  # postprocessing stays quick
            conv[-1].bias.view(-1, 91)[:, 1] += 10.0
    ref.eval()
    torch.save(ref.state_dict(), tmp_path / "det.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "det.safetensors")

    frames = np.random.default_rng(0).integers(0, 255, (1, 96, 128, 3), dtype=np.uint8)
    with torch.inference_mode():
        expected = ref(list(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255))[0]
    det = get_detector(f"torchvision:{ARCH}", weights_path=tmp_path / "det.pth", score_threshold=0.0)
    assert isinstance(det, TorchvisionPersonDetector) and det.name == f"torchvision:{ARCH}"
    (got,) = det.detect(frames)
    assert got.dtype == np.float32 and got.shape[1] == 5
    person = expected["labels"] == 1
    assert person.sum() > 10
    np.testing.assert_allclose(got[:, :4], expected["boxes"][person].numpy(), atol=1e-3)
    np.testing.assert_allclose(got[:, 4], expected["scores"][person].numpy(), atol=1e-5)

    from_safetensors = _load_state_dict(tmp_path / "det.safetensors")  # the other file format, same weights
    assert from_safetensors.keys() == ref.state_dict().keys()
    assert all(torch.equal(from_safetensors[k], v) for k, v in ref.state_dict().items())


def test_torchvision_bad_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        get_detector(f"torchvision:{ARCH}", weights_path=tmp_path / "missing.pth")
    torch.save({"backbone.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"wrong.pth: weights do not fit torchvision " + ARCH):
        get_detector(f"torchvision:{ARCH}", weights_path=tmp_path / "wrong.pth")
    (tmp_path / "garbage.pth").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="garbage.pth: could not read"):
        get_detector(f"torchvision:{ARCH}", weights_path=tmp_path / "garbage.pth")


# --- precomputed JSON boxes ------------------------------------------------------------------------


def test_json_boxes_round_trip_and_rescale(tmp_path):
    boxes = [np.array([[10, 20, 110, 220, 0.9]], np.float32), np.zeros((0, 5), np.float32)]
    path = tmp_path / "boxes.json"
    write_boxes_json(path, {"clips/a.mp4": (640, 480, [0.0, 0.125], boxes)}, detector="test")
    det = get_detector(f"json:{path}")
    assert isinstance(det, JsonBoxDetector) and isinstance(det, PersonDetector)
    frames = np.zeros((3, 240, 320, 3), np.uint8)  # half size: boxes are rescaled
    out = det.detect(frames, video="/data/clips/a.mp4", times=[0.01, 0.13, 0.0])  # matched by file name
    np.testing.assert_allclose(out[0], [[5, 10, 55, 110, 0.9]], atol=1e-5)
    assert out[1].shape == (0, 5)
    np.testing.assert_allclose(out[2], out[0])


def test_json_boxes_by_frame_index(tmp_path):
    path = tmp_path / "boxes.json"
    path.write_text(
        '{"format": "emotionclip-boxes/1", "videos": {"a": {"width": 100, "height": 100, "fps": 25,'
        ' "frames": [{"frame": 25, "boxes": [[1, 2, 3, 4, 0.7]]}]}}}'
    )
    out = get_detector(f"json:{path}").detect(
        np.zeros((1, 100, 100, 3), np.uint8), video="a.mp4", times=[1.0]
    )
    np.testing.assert_allclose(out[0], [[1, 2, 3, 4, 0.7]], atol=1e-6)


def test_json_boxes_errors(tmp_path):
    frames = np.zeros((1, 10, 10, 3), np.uint8)
    with pytest.raises(FileNotFoundError, match="none.json"):
        get_detector(f"json:{tmp_path / 'none.json'}")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        get_detector(f"json:{bad}")
    bad.write_text('{"videos": {}}')
    with pytest.raises(ValueError, match="emotionclip-boxes/1"):
        get_detector(f"json:{bad}")
    bad.write_text('{"format": "emotionclip-boxes/1", "videos": {"a": {"width": 10, "frames": []}}}')
    with pytest.raises(ValueError, match="video 'a': malformed"):
        get_detector(f"json:{bad}")
    good = tmp_path / "good.json"
    write_boxes_json(good, {"a": (10, 10, [0.0], [np.zeros((0, 5))])})
    det = get_detector(f"json:{good}")
    with pytest.raises(JsonBoxesError, match="no boxes for video 'b.mp4'"):
        det.detect(frames, video="b.mp4", times=[0.0])
    with pytest.raises(JsonBoxesError, match="no frame within"):
        det.detect(frames, video="a", times=[3.0])
    with pytest.raises(ValueError, match="need video"):
        det.detect(frames)
