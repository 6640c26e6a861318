import numpy as np
import pandas as pd
import pytest
from PIL import Image

from emotionclip.evaluate.datasets import load_split, meld
from evaluate_media import MELD_COLUMNS, write_bold, write_json, write_video


def _reasons(split):
    return {s["key"]: s["reason"] for s in split.skipped}


# ---------------------------------------------------------------------------------------------- MELD


def test_meld_real_dev_csv_reports_known_broken_and_missing(shared_dir, tmp_path):
    csv = shared_dir / "formats" / "meld" / "dev_sent_emo.csv"
    table = pd.read_csv(csv)
    (tmp_path / "dev_sent_emo.csv").symlink_to(csv)  # GPL data: referenced, never copied
    videos = tmp_path / "dev_splits_complete"
    videos.mkdir()
    for d, u in zip(table["Dialogue_ID"], table["Utterance_ID"], strict=True):
        (videos / f"dia{d}_utt{u}.mp4").write_bytes(b"\0")
    (videos / "dia0_utt0.mp4").unlink()
    (videos / "dia1_utt0.mp4").write_bytes(b"")
    split = load_split("meld", tmp_path, "dev")
    reasons = _reasons(split)
    assert "known broken" in reasons["dia110_utt7"]
    assert reasons["dia0_utt0"] == "video file missing"
    assert "empty" in reasons["dia1_utt0"]
    assert len(split.samples) == len(table) - 3 == 1106
    by_key = {s.key: s for s in split.samples}
    assert meld.EMOTIONS[int(by_key["dia0_utt1"].labels["emotion"])] == "surprise"
    assert all(s.detect for s in split.samples)
    counts = np.bincount(split.labels("emotion"), minlength=7)
    expected = table[~table.apply(lambda r: f"dia{r.Dialogue_ID}_utt{r.Utterance_ID}" in reasons, axis=1)]
    assert counts.tolist() == [int((expected.Emotion == e).sum()) for e in meld.EMOTIONS]


def test_meld_train_known_broken_utterance_and_layout_errors(tmp_path):
    rows = [
        [i + 1, "hi", "Ross", "joy", "positive", 125, u, 1, 1, "00:00:01,000", "00:00:02,000"]
        for i, u in enumerate(range(5))
    ]
    (tmp_path / "MELD.Raw").mkdir()
    pd.DataFrame(rows, columns=MELD_COLUMNS).to_csv(tmp_path / "MELD.Raw" / "train_sent_emo.csv", index=False)
    with pytest.raises(FileNotFoundError, match="MELD train videos"):
        load_split("meld", tmp_path, "train")
    videos = tmp_path / "MELD.Raw" / "train_splits"
    videos.mkdir()
    for u in range(5):
        (videos / f"dia125_utt{u}.mp4").write_bytes(b"\0")
    split = load_split("meld", tmp_path, "train")
    assert [s.key for s in split.samples] == ["dia125_utt0", "dia125_utt1", "dia125_utt2", "dia125_utt4"]
    assert "known broken" in _reasons(split)["dia125_utt3"]
    with pytest.raises(ValueError, match="splits"):
        load_split("meld", tmp_path, "val")


# ---------------------------------------------------------------------------------------------- BoLD


def test_bold_layout_boxes_from_joints_and_broken_entries(tmp_path):
    broken = write_bold(tmp_path, n_train=5, n_val=2)
    split = load_split("bold", tmp_path, "train")
    assert len(split.samples) == 5
    reasons = _reasons(split)
    assert set(reasons) == set(broken["train"])
    for key, why in broken["train"].items():
        assert why in reasons[key]
    s = split.samples[0]
    assert s.key == "000/train0.mp4/0001.mp4#0"
    assert s.labels["categories"].shape == (26,) and set(np.unique(s.labels["categories"])) <= {0.0, 1.0}
    assert s.labels["vad"].shape == (3,)
    # joints frames count from the first frame of the file (100 -> 0); the all-zero joint is ignored
    assert sorted(s.frame_boxes) == list(range(8))
    np.testing.assert_array_equal(s.frame_boxes[0], [[5, 5, 25, 35, 1]])
    other = split.samples[1]  # person 1 of its video
    np.testing.assert_array_equal(other.frame_boxes[3], [[30, 10, 50, 40, 1]])
    (tmp_path / "annotations" / "val.csv").write_text("a,b,c\n")
    with pytest.raises(ValueError, match=r"val\.csv: expected 37 columns"):
        load_split("bold", tmp_path, "val")


# -------------------------------------------------------------------------------------------- Emotic


def test_emotic_layout_and_broken_entries(tmp_path):
    folder = tmp_path / "emotic" / "mscoco" / "images"
    folder.mkdir(parents=True)
    for name in ("a.jpg", "b.jpg"):
        Image.fromarray(np.full((60, 80, 3), 120, np.uint8)).save(folder / name)
    rows = [
        ["mscoco/images", "a.jpg", "[80, 60]", "[10, 5, 50, 55]"],
        ["mscoco/images", "b.jpg", "[80, 60]", "[0, 0, 80, 60]"],
        ["mscoco/images", "a.jpg", "[80, 60]", "[5, 5, 20, 20]"],  # a second person in the same image
        ["mscoco/images", "gone.jpg", "[80, 60]", "[10, 5, 50, 55]"],  # missing image
        ["mscoco/images", "b.jpg", "[80, 60]", "[90, 70, 120, 100]"],  # box outside the image
        ["mscoco/images", "b.jpg", "[80, 60]", "[10, 5, 50]"],  # malformed box
    ]
    pd.DataFrame(rows, columns=["Folder", "Filename", "Image Size", "BBox"]).to_csv(tmp_path / "val.csv")
    cats = np.eye(26, dtype=np.float32)[:6]
    np.save(tmp_path / "val_cat_arr.npy", cats)
    np.save(tmp_path / "val_cont_arr.npy", np.arange(18, dtype=np.float32).reshape(6, 3))
    split = load_split("emotic", tmp_path, "val")
    assert [s.key for s in split.samples] == [
        "mscoco/images/a.jpg#0",
        "mscoco/images/b.jpg#1",
        "mscoco/images/a.jpg#2",
    ]
    reasons = _reasons(split)
    assert reasons["mscoco/images/gone.jpg#3"] == "image file missing"
    assert "outside" in reasons["mscoco/images/b.jpg#4"]
    assert "unreadable" in reasons["mscoco/images/b.jpg#5"]
    s = split.samples[1]
    assert s.kind == "image" and s.box == (0, 0, 80, 60) and s.box_frame_size == (80, 60)
    np.testing.assert_array_equal(s.labels["categories"], cats[1])
    np.testing.assert_array_equal(split.samples[2].labels["vad"], [6, 7, 8])
    np.save(tmp_path / "val_cat_arr.npy", cats[:5])
    with pytest.raises(ValueError, match="val_cat_arr.npy: expected shape"):
        load_split("emotic", tmp_path, "val")


# --------------------------------------------------------------------------------------- MovieGraphs


def test_moviegraphs_layout_and_broken_entries(tmp_path):
    write_video(tmp_path / "videos" / "tt001.mp4", (200, 30, 30), seconds=3)
    labels = {
        "tt001": {
            "0": ["Happiness", "Doubt/Conf"],
            "1": ["sadness"],
            "2": [],
            "3": ["Bliss"],
            "5": ["Anger"],
        },
        "tt002": {"0": ["Fear"]},
    }
    write_json(tmp_path / "official" / "mg" / "py3loader" / "emotion_labels.json", labels)
    write_json(
        tmp_path / "official" / "mg" / "split.json", {"train": ["tt001", "tt002"], "val": [], "test": []}
    )
    info = tmp_path / "official" / "mg_videoinfo"
    for movie in ("tt001", "tt002"):
        (info / "scene_boundaries").mkdir(parents=True, exist_ok=True)
        (info / "video_boundaries").mkdir(parents=True, exist_ok=True)
        (info / "scene_boundaries" / f"{movie}.scenes.gt").write_text("1 2 1 \n3 3 1 \n1 1 0 \n2 2 1 \n")
        (info / "video_boundaries" / f"{movie}.videvents").write_text(
            "CVideoEvents 1\n8 1.0 CUT\n16 2.0 CUT\n"
        )
    split = load_split("moviegraphs", tmp_path, "train")
    assert [s.key for s in split.samples] == ["tt001/0", "tt001/1", "tt001/2"]
    first, last, unlabeled = split.samples
    # shots 1-2: from frame 0 to the frame before the second cut (the release's frame boundaries)
    assert (first.first_frame, first.last_frame) == (0, 15)
    # the movie's last shot: the release takes 8 * 24 frames from the clip's start
    assert (last.first_frame, last.last_frame) == (16, 16 + 192)
    assert first.labels["categories"].sum() == 2 and first.detect
    # a clip listed without labels stays, with an all-zero target
    assert (unlabeled.first_frame, unlabeled.last_frame) == (0, 7)
    assert unlabeled.labels["categories"].sum() == 0
    reasons = _reasons(split)
    assert "no scene boundary" in reasons["tt001/5"]
    assert "unknown" in reasons["tt001/3"]
    assert reasons["tt002/0"] == "movie file missing"


# -------------------------------------------------------------------------------------- LIRIS-ACCEDE


def test_liris_accede_one_frame_per_second_masks_and_dropped_seconds(tmp_path):
    write_video(tmp_path / "movies" / "MEDIAEVAL18_00.mp4", (10, 10, 10), seconds=10)
    write_video(tmp_path / "movies" / "MEDIAEVAL18_50.mp4", (10, 10, 10), seconds=3)
    dev = tmp_path / "MEDIAEVAL18_DevSet_Valence-Arousal-annotations" / "annotations"
    test = tmp_path / "MEDIAEVAL18_TestSet_Valence-Arousal-annotations" / "annotations"
    for d, movie, seconds in (
        (dev, "MEDIAEVAL18_00", 10),
        (dev, "MEDIAEVAL18_01", 5),
        (test, "MEDIAEVAL18_50", 5),
    ):
        d.mkdir(parents=True, exist_ok=True)
        t = np.arange(seconds)
        pd.DataFrame({"Time": t, "MeanValence": 0.1 * t, "MeanArousal": -0.1 * t}).to_csv(
            d / f"{movie}_Valence-Arousal.txt", sep="\t", index=False
        )
    train = load_split("liris-accede", tmp_path, "train")
    # the release drops the first 4 and the last 3 seconds of every training movie
    assert [s.key for s in train.samples] == ["MEDIAEVAL18_00@4", "MEDIAEVAL18_00@5", "MEDIAEVAL18_00@6"]
    s = train.samples[1]
    assert s.instant == 5.0 and s.detect  # one frame, the annotated second, with person masks
    np.testing.assert_allclose(s.labels["va"], [0.5, -0.5])
    assert "no video file" in _reasons(train)["MEDIAEVAL18_01"]
    test_split = load_split("liris-accede", tmp_path, "test")
    assert [s.instant for s in test_split.samples] == [0, 1, 2, 3]  # every second; 4 lies past the end
    assert "outside" in _reasons(test_split)["MEDIAEVAL18_50@4"]
    assert {s.group for s in test_split.samples} == {"MEDIAEVAL18_50"}


def test_unknown_dataset_and_missing_root(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset"):
        load_split("affectnet", tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_split("bold", tmp_path / "nowhere", "train")
    with pytest.raises(FileNotFoundError, match="train.csv: BoLD train annotations not found"):
        load_split("bold", tmp_path, "train")
