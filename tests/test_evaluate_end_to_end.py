import json

import numpy as np
import pandas as pd
import pytest
import torch

import emotionclip
import emotionclip.factory
from emotionclip.cli import main
from emotionclip.evaluate import ProbeHead, evaluate, make_probe_evaluator
from emotionclip.evaluate.features import _load_features
from evaluate_media import write_bold, write_meld, write_video


@pytest.fixture(scope="module")
def checkpoint(parity_dir):
    return parity_dir / "official_format_checkpoint.pt"


@pytest.fixture(scope="module")
def bold_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bold")
    write_bold(root, n_train=24, n_val=12)
    # a video that exists but does not decode: reported at extraction, not by the loader
    corrupt = root / "videos" / "997" / "corrupt.mp4" / "0001.mp4"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a video" * 50)
    joints = root / "joints" / "997" / "corrupt.mp4"
    joints.mkdir(parents=True)
    np.save(joints / "0001.npy", np.load(next((root / "joints" / "000").rglob("*.npy"))))
    table = pd.read_csv(root / "annotations" / "train.csv", header=None)
    row = table.iloc[0].copy()
    row[0] = "997/corrupt.mp4/0001.mp4"
    pd.concat([table, row.to_frame().T]).to_csv(root / "annotations" / "train.csv", header=False, index=False)
    return root


def test_cli_evaluate_bold_table_cache_and_fast_probe_matches_sklearn(
    checkpoint, bold_root, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    args = [
        "evaluate",
        "--checkpoint",
        str(checkpoint),
        "--dataset",
        "bold",
        "--root",
        str(bold_root),
        "--out",
        str(out),
        "--workers",
        "1",
        "--batch-size",
        "8",
    ]
    assert main([*args, "--compare-sklearn"]) == 0
    result = json.loads((out / "bold_metrics.json").read_text())
    table = (out / "bold_metrics.md").read_text()
    assert "| val |" in table and "| val (sklearn) |" in table and "mAP" in table
    val, ref = result["metrics"]["val"], result["metrics_sklearn"]["val"]
    assert set(val) == {"mAP", "AUC", "R2"}
    for metric in val:
        assert np.isfinite(val[metric])
        assert abs(val[metric] - ref[metric]) <= 0.1, metric
    assert result["protocol"]["num_frames"] == 4  # the fixture model's video_len
    assert result["counts"]["train"] == {"samples": 25, "skipped": 3, "failed": 1, "used": 24}
    assert "does not decode" not in json.dumps(result["failed"])
    assert result["failed"]["train"][0]["key"] == "997/corrupt.mp4/0001.mp4#0"
    assert {s["reason"] for s in result["skipped"]["val"]} >= {"video file missing", "joints file is empty"}
    for plot in result["plots"]:
        assert (out / plot.split("/")[-1]).stat().st_size > 1000
    # the saved head reproduces the metric from the cached features
    head = ProbeHead.load(result["probe_heads"]["categories"])
    assert (
        head.kind == "ovr"
        and len(head.classes) == 26
        and head.meta["checkpoint_sha256"] == result["checkpoint_sha256"]
    )
    cache = next((out / "feature_cache" / "bold").glob("val-*.npz"))
    feats = _load_features(cache)
    assert feats.features.shape == (12, 64)
    np.testing.assert_allclose(np.linalg.norm(feats.features, axis=1), 1, atol=1e-5)

    assert main(args) == 2  # refuses to replace the results without --overwrite
    assert main([*args[:6], str(tmp_path / "no_such_root"), *args[7:], "--overwrite"]) == 2

    # a second run with other probe settings reads the cache and never builds the model
    def no_model(*a, **k):
        raise AssertionError("the model was loaded although every feature was cached")

    monkeypatch.setattr(emotionclip.factory, "load_model", no_model)  # what evaluate calls
    assert main([*args, "--overwrite", "--solver", "sklearn"]) == 0
    again = json.loads((out / "bold_metrics.json").read_text())
    assert again["metrics"]["val"] == pytest.approx(ref, abs=1e-6)


def test_probe_evaluator_hook_for_training(checkpoint, bold_root):
    hook = make_probe_evaluator("bold", bold_root, max_samples=12, num_workers=0)
    model = emotionclip.load_model(checkpoint)
    model.train()
    metrics = hook(model, 7)
    assert set(metrics) == {"bold/val/mAP", "bold/val/AUC", "bold/val/R2"}
    assert all(np.isfinite(v) for v in metrics.values())
    assert model.training  # the hook leaves the model as it found it


def test_meld_with_precomputed_boxes_caches_detector_output(checkpoint, tmp_path):
    root, boxes = write_meld(tmp_path)
    result = evaluate(
        checkpoint,
        "meld",
        root,
        out_dir=tmp_path / "out",
        detector=f"json:{boxes}",
        num_workers=1,
        compare_sklearn=True,
    )
    assert set(result["metrics"]) == {"dev", "test"}
    assert set(result["metrics"]["dev"]) == {"weighted_F1", "accuracy"}
    assert result["max_abs_difference"] <= 0.1
    cached = json.loads(
        next((tmp_path / "out" / "feature_cache" / "meld").glob("boxes-train-*.json")).read_text()
    )
    assert len(cached) == 9 and np.allclose(cached["dia1_utt0"][0], [[8, 4, 40, 44, 0.9, 1]])  # track id 1


def test_meld_with_the_releases_own_box_files(checkpoint, tmp_path):
    # the release's {split}_human_boxes.json: YOLO 640-letterbox pixels (64x48 frames: scale 10, no
    # pad), the same clip ids in every split, one frame_<k>.jpg entry per frame of the 8 fps clips
    root, _ = write_meld(tmp_path)
    letterboxed = {
        "train": [80, 40, 400, 440, 0.9],
        "dev": [100, 50, 300, 400, 0.8],
        "test": [0, 0, 640, 480, 0.7],
    }
    for split, n in (("train", 9), ("dev", 3), ("test", 3)):
        frames = {f"frame_{k}.jpg": [letterboxed[split]] for k in range(8)}
        (root / f"{split}_human_boxes.json").write_text(
            json.dumps({f"dia1_utt{i}": frames for i in range(n)})
        )
    out = tmp_path / "out"
    args = ["evaluate", "--checkpoint", str(checkpoint), "--dataset", "meld", "--root", str(root)]
    assert main([*args, "--out", str(out), "--workers", "1", "--detector", f"release-boxes:{root}"]) == 0
    result = json.loads((out / "meld_metrics.json").read_text())
    assert result["protocol"]["detector"] == f"release-boxes:{root}" and not result["failed"]
    for split, want in (
        ("train", [8, 4, 40, 44, 0.9]),
        ("dev", [10, 5, 30, 40, 0.8]),
        ("test", [0, 0, 64, 48, 0.7]),
    ):
        cached = json.loads(next((out / "feature_cache" / "meld").glob(f"boxes-{split}-*.json")).read_text())
        assert all(np.allclose(np.asarray(b)[:, :5], [want]) for b in cached["dia1_utt0"]), (
            split
        )  # + track id


def test_zero_shot_cli(checkpoint, tmp_path, capsys):
    from PIL import Image

    videos = [write_video(tmp_path / f"v{i}.mp4", c) for i, c in enumerate([(250, 0, 0), (0, 0, 250)])]
    image = tmp_path / "face.png"
    Image.fromarray(np.full((40, 30, 3), 128, np.uint8)).save(image)
    out = tmp_path / "zs.json"
    rc = main(
        [
            "zero-shot",
            "--checkpoint",
            str(checkpoint),
            "--classes",
            "joy, anger,calm",
            *map(str, videos),
            str(image),
            str(tmp_path / "missing.mp4"),
            "--output",
            str(out),
        ]
    )
    assert rc == 1  # one input failed; the others are still scored
    result = json.loads(out.read_text())
    assert result["classes"] == ["joy", "anger", "calm"]
    assert [r["path"] for r in result["results"]] == [*map(str, videos), str(image)]
    for r in result["results"]:
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    assert "missing.mp4" in result["failed"][0]["reason"]
    assert "FAILED" in capsys.readouterr().out


def test_zero_shot_classifier_is_normalised_prompt_average(checkpoint):
    from emotionclip.evaluate.zeroshot import zero_shot_classifier

    model = emotionclip.load_model(checkpoint)
    cls = zero_shot_classifier(model, ["joy", "anger"], ["a {} face.", "someone feeling {}."])
    with torch.no_grad():
        t = model.encode_text(emotionclip.tokenize(["a joy face.", "someone feeling joy."]))
    t = torch.nn.functional.normalize(t, dim=-1).mean(0)
    torch.testing.assert_close(cls[0], t / t.norm(), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="'\\{\\}'"):
        zero_shot_classifier(model, ["joy"], ["no placeholder"])


def test_extraction_resumes_from_partial_save(checkpoint, bold_root, tmp_path, caplog):
    from emotionclip.evaluate.datasets import load_split
    from emotionclip.evaluate.features import Protocol, extract_features

    model = emotionclip.load_model(checkpoint)
    samples = load_split("bold", bold_root, "val").samples
    protocol = Protocol(num_frames=model.video_len)
    partial = tmp_path / "val.partial.npz"
    first = extract_features(
        model, samples[:8], protocol, batch_size=4, save_every=4, partial_path=partial, num_workers=0
    )
    assert _load_features(partial).keys == first.keys  # what an interrupted run leaves behind
    with caplog.at_level("INFO"):
        resumed = extract_features(
            model, samples, protocol, batch_size=4, partial_path=partial, num_workers=0
        )
    assert "resuming" in caplog.text and "8 samples done" in caplog.text
    fresh = extract_features(model, samples, protocol, batch_size=4, num_workers=0)
    assert resumed.keys == fresh.keys
    np.testing.assert_allclose(resumed.features, fresh.features, atol=1e-5)


def test_emotic_images_are_encoded_with_their_person_box(checkpoint, tmp_path):
    from PIL import Image

    from emotionclip.evaluate.datasets import load_split
    from emotionclip.evaluate.features import Protocol, decode_sample, extract_features

    folder = tmp_path / "emotic" / "ade20k"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(folder / "a.png")
    # the CSV's boxes are in a 320x240 original; the file on disk is half that size
    rows = [
        ["ade20k", "a.png", "[320, 240]", "[0, 0, 160, 240]"],
        ["ade20k", "a.png", "[320, 240]", "[160, 0, 320, 240]"],
    ]
    pd.DataFrame(rows, columns=["Folder", "Filename", "Image Size", "BBox"]).to_csv(
        tmp_path / "test.csv", index=False
    )
    np.save(tmp_path / "test_cat_arr.npy", np.eye(26, dtype=np.float32)[:2])
    split = load_split("emotic", tmp_path, "test")
    np.testing.assert_array_equal(
        decode_sample(split.samples[1], 4).boxes[0], [[80, 0, 160, 120, 1]]
    )  # rescaled
    model = emotionclip.load_model(checkpoint)
    feats = extract_features(model, split.samples, Protocol(num_frames=model.video_len), num_workers=0)
    assert feats.features.shape == (2, 64) and not feats.failed
    assert np.abs(feats.features[0] - feats.features[1]).max() > 1e-4  # left vs right half of the same image


def test_liris_accede_end_to_end(checkpoint, tmp_path):
    root = tmp_path / "liris"
    for movie, split, colour in (
        ("MEDIAEVAL18_00", "DevSet", (250, 20, 20)),
        ("MEDIAEVAL18_01", "DevSet", (20, 20, 250)),
        ("MEDIAEVAL18_50", "TestSet", (130, 20, 130)),
    ):
        write_video(root / "movies" / f"{movie}.mp4", colour, seconds=12, fps=2)
        ann = root / f"MEDIAEVAL18_{split}_Valence-Arousal-annotations" / "annotations"
        ann.mkdir(parents=True, exist_ok=True)
        t = np.arange(12)
        pd.DataFrame(
            {"Time": t, "MeanValence": colour[0] / 250 + 0.01 * t, "MeanArousal": colour[2] / 250 - 0.01 * t}
        ).to_csv(ann / f"{movie}_Valence-Arousal.txt", sep="\t", index=False)
    result = evaluate(checkpoint, "liris-accede", root, out_dir=tmp_path / "out", num_workers=0)
    assert result["protocol"]["detector"] == "default"  # the Python API uses person masks, as the CLI
    assert result["protocol"]["precision"] == "fp32"  # the CPU's default
    test = result["metrics"]["test"]
    assert set(test) == {"MSE", "PCC", "valence_MSE", "arousal_MSE", "valence_PCC", "arousal_PCC"}
    assert set(result["metrics"]["test (per-movie smoothing)"]) == set(test)  # the variant: its own row
    assert result["counts"]["train"]["used"] == 10 and result["counts"]["test"]["used"] == 12
    assert np.isfinite(test["MSE"]) and test["MSE"] == pytest.approx(
        (test["valence_MSE"] + test["arousal_MSE"]) / 2
    )
    assert "| test (per-movie smoothing) |" in (tmp_path / "out" / "liris-accede_metrics.md").read_text()
