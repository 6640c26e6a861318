"""Each benchmark's protocol as the release runs it, on small generated datasets in the official
layouts: which frames a clip is seen through, LIRIS-ACCEDE's single frame and smoothing, the
precision in the feature-cache key."""

import numpy as np
import pandas as pd
import pytest
from scipy.signal import savgol_filter

import emotionclip
from emotionclip.evaluate import metrics as M
from emotionclip.evaluate.benchmarks import BENCHMARKS
from emotionclip.evaluate.datasets import Sample, Split, load_split
from emotionclip.evaluate.features import Features, Protocol, decode_sample, extract_features
from emotionclip.evaluate.probe import fit_sklearn
from emotionclip.evaluate.probing import run_probes
from emotionclip.evaluate.scoring import score
from emotionclip.evaluate.smoothing import smooth_per_group
from evaluate_media import MELD_COLUMNS, frame_numbers, write_bold, write_counting_video, write_json


def _model_frames(sample, num_frames):
    decoded = decode_sample(sample, num_frames)
    return decoded, frame_numbers(decoded.frames[decoded.plan.expand])


def _linspace(first, last, t):
    return np.linspace(first, last, t, dtype=int).tolist()


# ------------------------------------------------------------------------------- frames per benchmark


def test_bold_frames_are_linspace_over_the_clip_with_their_joint_boxes(tmp_path):
    write_bold(tmp_path, n_train=2, n_val=1)
    sample = load_split("bold", tmp_path, "train").samples[0]
    write_counting_video(sample.path, frames=20)  # joints cover frames 0-7 only
    decoded, seen = _model_frames(sample, 4)
    assert seen == _linspace(0, 19, 4) == [0, 6, 12, 19]  # first and last frame included
    assert [len(b) for b in decoded.boxes] == [1, 1, 0, 0]  # each frame's own joints box
    np.testing.assert_array_equal(decoded.boxes[1], [[5, 5, 25, 35, 1]])


def test_meld_frames_are_linspace_over_the_utterance(tmp_path):
    rows = [[1, "hi", "Ross", "joy", "positive", 3, 0, 1, 1, "0", "1"]]
    pd.DataFrame(rows, columns=MELD_COLUMNS).to_csv(tmp_path / "dev_sent_emo.csv", index=False)
    write_counting_video(tmp_path / "dev_splits_complete" / "dia3_utt0.mp4", frames=30)
    (sample,) = load_split("meld", tmp_path, "dev").samples
    assert sample.detect  # person masks from the detector, as the release
    decoded, seen = _model_frames(sample, 8)
    assert seen == _linspace(0, 29, 8)
    assert decoded.boxes is None  # left to the detector
    short = tmp_path / "short.mp4"  # fewer frames than T: frames repeat, each decoded once
    write_counting_video(short, frames=3)
    decoded, seen = _model_frames(Sample("s", str(short), {}), 8)
    assert seen == _linspace(0, 2, 8) and len(decoded.frames) == 3


def _moviegraphs(root, frames):
    write_counting_video(root / "videos" / "tt9.mp4", frames=frames)
    write_json(root / "emotion_labels.json", {"tt9": {"0": ["Fear"], "1": ["Anger"], "2": []}})
    write_json(root / "split.json", {"train": [], "val": ["tt9"], "test": []})
    info = root / "mg_videoinfo"
    (info / "scene_boundaries").mkdir(parents=True)
    (info / "video_boundaries").mkdir(parents=True)
    (info / "scene_boundaries" / "tt9.scenes.gt").write_text("1 2 1\n3 3 1\n2 2 1\n")
    (info / "video_boundaries" / "tt9.videvents").write_text("CVideoEvents 1\n8 1.0 CUT\n16 2.0 CUT\n")
    return load_split("moviegraphs", root, "val")


def test_moviegraphs_frames_from_shot_boundaries_and_the_last_clip(tmp_path):
    split = _moviegraphs(tmp_path, frames=40)
    clip, last, unlabeled = split.samples
    assert _model_frames(clip, 4)[1] == _linspace(0, 15, 4)  # shots 1-2: frames 0 .. 16 - 1
    assert (last.first_frame, last.last_frame) == (16, 16 + 192)  # the last shot: start + 192 frames
    assert _model_frames(last, 4)[1] == _linspace(16, 39, 4)  # ... stopping at the end of the file
    assert _model_frames(unlabeled, 4)[1] == _linspace(8, 15, 4)
    assert unlabeled.labels["categories"].sum() == 0


def test_liris_accede_one_frame_repeated(tmp_path):
    write_counting_video(tmp_path / "m" / "MEDIAEVAL18_50.mp4", frames=24, fps=4)
    ann = tmp_path / "MEDIAEVAL18_TestSet_Valence-Arousal-annotations" / "annotations"
    ann.mkdir(parents=True)
    pd.DataFrame({"Time": range(6), "MeanValence": 0.0, "MeanArousal": 0.0}).to_csv(
        ann / "MEDIAEVAL18_50_Valence-Arousal.txt", sep="\t", index=False
    )
    sample = load_split("liris-accede", tmp_path, "test").samples[2]
    decoded, seen = _model_frames(sample, 8)
    assert sample.instant == 2 and seen == [8] * 8  # the frame showing at 2 s, T times
    assert len(decoded.frames) == 1  # decoded (and detected) once


def test_liris_masks_from_the_detector_reach_the_encoder(tmp_path):
    from emotionclip.detect import get_detector
    from emotionclip.detect.json_boxes import write_boxes_json

    video = write_counting_video(tmp_path / "MEDIAEVAL18_50.mp4", frames=16, fps=4)
    boxes = tmp_path / "boxes.json"
    write_boxes_json(boxes, {video.name: (64, 48, [1.0], [np.array([[0, 0, 32, 48, 0.9]])])})
    sample = Sample("m@1", str(video), {}, instant=1.0, detect=True)
    model = emotionclip.create_model(backbone="tiny", video_len=4, head_layers=1)
    protocol = Protocol(num_frames=4, image_size=model.image_size, detector="json")
    with_mask = extract_features(
        model, [sample], protocol, detector=get_detector(f"json:{boxes}"), num_workers=0
    )
    without = extract_features(model, [sample], protocol, detector=None, num_workers=0)
    assert np.abs(with_mask.features - without.features).max() > 1e-4


# ------------------------------------------------------------------------------ probes and smoothing


def _split(dataset, name, keys, labels, groups, label="va"):
    samples = [
        Sample(k, "x.mp4", {label: np.asarray(y)}, group=g)
        for k, y, g in zip(keys, labels, groups, strict=True)
    ]
    return Split(dataset, name, samples, [], {label: ["valence", "arousal"]})


def test_liris_smoothing_runs_over_the_concatenated_test_set_with_a_per_movie_row():
    rng = np.random.default_rng(0)
    d = 16
    w = rng.normal(size=(d, 2))
    x_train, x_test = rng.normal(size=(60, d)), rng.normal(size=(170, d))
    x_train /= np.linalg.norm(x_train, axis=1, keepdims=True)
    x_test /= np.linalg.norm(x_test, axis=1, keepdims=True)
    y_train, y_test = x_train @ w, x_test @ w + 0.3 * rng.normal(size=(170, 2))
    groups = ["a"] * 120 + ["b"] * 50
    keys = [f"t{i}" for i in range(170)]
    splits = {
        "train": _split("liris-accede", "train", [f"r{i}" for i in range(60)], y_train, ["r"] * 60),
        "test": _split("liris-accede", "test", keys, y_test, groups),
    }
    order = rng.permutation(170)  # the feature file's order is not the split's: the split's wins
    feats = {
        "train": Features([f"r{i}" for i in range(60)], x_train.astype(np.float32), []),
        "test": Features([keys[i] for i in order], x_test[order].astype(np.float32), []),
    }
    metrics, _, predictions = run_probes("liris-accede", splits, feats, solver="sklearn")
    pred = fit_sklearn("ridge", x_train, y_train, ["valence", "arousal"], c=1.0).predict(x_test)
    task = BENCHMARKS["liris-accede"].tasks[0]
    release = savgol_filter(pred, window_length=100, polyorder=3, axis=0)  # over both movies at once
    assert metrics["test"] == pytest.approx(score(task, y_test, release, ["valence", "arousal"]), abs=1e-6)
    per_movie = score(task, y_test, smooth_per_group(pred, groups), ["valence", "arousal"])
    assert metrics["test (per-movie smoothing)"] == pytest.approx(per_movie, abs=1e-6)
    assert metrics["test"]["MSE"] != pytest.approx(per_movie["MSE"], abs=1e-6)
    np.testing.assert_allclose(predictions["va"]["test"][1], release, atol=1e-6)


def test_per_movie_smoothing_stays_inside_each_movie():
    pred = np.concatenate([np.zeros(120), np.ones(50)])[:, None] + np.random.default_rng(0).normal(
        0, 0.1, (170, 1)
    )
    smooth = smooth_per_group(pred, ["a"] * 120 + ["b"] * 50)
    assert smooth[:120].std() < pred[:120].std() / 2  # the window-100 filter removes most noise
    assert abs(smooth[120:].mean() - 1) < 0.05  # movie b is not pulled towards movie a


def test_unlabeled_moviegraphs_clips_count_as_misses():
    y = np.array([[0, 1, 0], [0, 0, 0], [1, 0, 0]], np.float32)
    scores = np.array([[0.1, 0.8, 0.1], [0.9, 0.0, 0.1], [0.2, 0.7, 0.1]])
    assert M.top1_hit(y, scores) == pytest.approx(1 / 3)  # the release divides by every clip


# ---------------------------------------------------------------------------------------- precision


def test_precision_keys_the_cache_and_bf16_features_follow_fp32(tmp_path):
    assert Protocol(precision="bf16").key() != Protocol(precision="fp32").key()
    model = emotionclip.create_model(backbone="tiny", video_len=4, head_layers=1)
    video = write_counting_video(tmp_path / "v.mp4", frames=12)
    samples = [Sample("v", str(video), {})]
    fp32 = extract_features(
        model, samples, Protocol(num_frames=4, image_size=model.image_size), num_workers=0
    )
    bf16 = extract_features(
        model, samples, Protocol(num_frames=4, image_size=model.image_size, precision="bf16"), num_workers=0
    )
    assert float(fp32.features[0] @ bf16.features[0]) > 0.99  # unit vectors: the cosine
    with pytest.raises(ValueError, match="precision must be one of"):
        extract_features(model, samples, Protocol(precision="fp8"), num_workers=0)
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        extract_features(model, samples, Protocol(num_frames=4, precision="fp16"), num_workers=0)


def test_meld_layout_of_real_clips_gets_person_masks_by_default(parity_dir, media_dir, tmp_path):
    """Four CREMA-D clips (one actor, four emotions) laid out as MELD: the Python API's default
    detector finds the speaker in every clip, and the masks change the features."""
    import json

    from emotionclip.evaluate import evaluate
    from emotionclip.evaluate.features import _load_features

    clips = sorted((media_dir / "cremad").glob("*.flv"))[:4]
    emotion = {
        "ANG": "anger",
        "DIS": "disgust",
        "FEA": "fear",
        "HAP": "joy",
        "NEU": "neutral",
        "SAD": "sadness",
    }
    root = tmp_path / "meld"
    for split, folder in (
        ("train", "train_splits"),
        ("dev", "dev_splits_complete"),
        ("test", "output_repeated_splits_test"),
    ):
        (root / folder).mkdir(parents=True)
        rows = []
        for u, clip in enumerate(clips):
            (root / folder / f"dia0_utt{u}.mp4").symlink_to(clip)  # FLV inside: PyAV reads the content
            rows.append(
                [
                    u,
                    "Don't forget a jacket",
                    "1001",
                    emotion[clip.stem.split("_")[2]],
                    "neutral",
                    0,
                    u,
                    1,
                    1,
                    "0",
                    "2",
                ]
            )
        pd.DataFrame(rows, columns=MELD_COLUMNS).to_csv(root / f"{split}_sent_emo.csv", index=False)
    checkpoint = parity_dir / "official_format_checkpoint.pt"
    result = evaluate(checkpoint, "meld", root, out_dir=tmp_path / "out", num_workers=0)
    assert result["protocol"]["detector"] == "default"
    assert result["counts"]["dev"] == {"samples": 4, "skipped": 0, "failed": 0, "used": 4}
    cache = tmp_path / "out" / "feature_cache" / "meld"
    boxes = json.loads(next(cache.glob("boxes-dev-*.json")).read_text())
    assert len(boxes) == 4 and all(any(len(b) for b in frames) for frames in boxes.values())
    dev = load_split("meld", root, "dev").samples
    same_but_no_detector = Protocol(**{**result["protocol"], "detector": None})
    unmasked = extract_features(emotionclip.load_model(checkpoint), dev, same_but_no_detector, num_workers=0)
    masked = _load_features(next(cache.glob("dev-*.npz")))
    assert masked.keys == unmasked.keys
    assert np.abs(masked.features - unmasked.features).max() > 1e-3


def test_release_macro_counts_a_class_absent_from_the_split_as_ap_zero():
    import warnings

    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(1)
    n_cls, d = 26, 24
    w = rng.normal(size=(d, n_cls))

    def make(name, n):
        x = rng.normal(size=(n, d))
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = (x @ w + 0.5 * rng.normal(size=(n, n_cls)) > 0.8).astype(np.float32)
        if name != "train":
            y[:, 3] = 0  # a category nobody in this split shows
        keys = [f"{name}{i}" for i in range(n)]
        samples = [Sample(k, "x.jpg", {"categories": y[i]}, kind="image") for i, k in enumerate(keys)]
        names = [f"c{k}" for k in range(n_cls)]
        return Split("emotic", name, samples, [], {"categories": names}), Features(
            keys, x.astype(np.float32), []
        )

    built = {s: make(s, n) for s, n in (("train", 200), ("val", 80), ("test", 80))}
    splits, feats = {s: b[0] for s, b in built.items()}, {s: b[1] for s, b in built.items()}
    default, _, _ = run_probes("emotic", splits, feats, solver="sklearn")
    release, _, predictions = run_probes("emotic", splits, feats, solver="sklearn", macro="release")
    y, p = predictions["categories"]["val"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns about the absent class, and counts it 0
        expected = 100 * average_precision_score(y, p)
    assert release["val"]["mAP"] == pytest.approx(expected, abs=1e-6)
    assert default["val"]["mAP"] > release["val"]["mAP"] + 1  # 25 classes averaged instead of 26
    assert default["val"]["AUC"] == release["val"]["AUC"]  # the release's AUC fails on such a split
