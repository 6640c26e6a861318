"""Tiny benchmark datasets in the official layouts, written by the evaluate tests."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pandas as pd

from emotionclip.evaluate.datasets import bold


def write_video(path: Path, colour, seconds: float = 1.0, fps: int = 8, size=(64, 48)) -> Path:
    """A tiny H.264 clip: a flat colour with a moving bright square."""
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(int(seconds * fps)):
            img = np.empty((h, w, 3), np.uint8)
            img[:] = np.asarray(colour, np.uint8)
            x = (4 * i) % (w - 12)
            img[10:22, x : x + 12] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def write_counting_video(path: Path, frames: int, fps: int = 8, size=(64, 48)) -> Path:
    """A clip whose frame k is flat grey ``10 + 5 k`` (k < 48), so a decoded frame names its number."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"qp": "0"}
        for k in range(frames):
            img = np.full((h, w, 3), 10 + 5 * k, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def frame_numbers(frames: np.ndarray) -> list[int]:
    """The frame numbers of frames decoded from :func:`write_counting_video`."""
    return [int(round((float(f.mean()) - 10) / 5)) for f in frames]


def person_joints(frames: int, person: int, x0: float, y0: float, first_frame: int = 100) -> np.ndarray:
    """OpenPose-style rows ``[frame, person, 18 x (x, y, conf)]`` for a box ~ (x0, y0)-(x0+20, y0+30)."""
    rows = np.zeros((frames, 56), np.float32)
    rows[:, 0] = first_frame + np.arange(frames)
    rows[:, 1] = person
    pts = rows[:, 2:].reshape(frames, 18, 3)
    pts[:, :, 0] = x0 + np.linspace(0, 20, 18)
    pts[:, :, 1] = y0 + np.linspace(0, 30, 18)
    pts[:, :, 2] = 0.9
    pts[:, 5] = 0  # an undetected joint is all zeros and must not stretch the box
    return rows


def write_bold(root: Path, n_train: int = 24, n_val: int = 12, seed: int = 0) -> dict:
    """BoLD layout whose category labels follow the clip colour (so a probe can learn them).
    Adds three broken rows per split: missing video, a person without joints, an empty joints file."""
    rng = np.random.default_rng(seed)
    broken = {}
    for split, n in (("train", n_train), ("val", n_val)):
        rows = []
        for i in range(n):
            vid = f"{i % 7:03d}/{split}{i}.mp4/0001.mp4"
            hue = rng.uniform(0, 1)
            colour = (255 * hue, 255 * (1 - hue), 80)
            write_video(root / "videos" / vid, colour)
            joints = np.concatenate([person_joints(8, 0, 5, 5), person_joints(8, 1, 30, 10)])
            (root / "joints" / f"{i % 7:03d}/{split}{i}.mp4").mkdir(parents=True, exist_ok=True)
            np.save(root / "joints" / f"{i % 7:03d}/{split}{i}.mp4/0001.npy", joints)
            cats = np.clip(
                rng.uniform(0, 0.6, 26) + np.where(np.arange(26) % 2 == 0, hue, 1 - hue) * 0.5, 0, 1
            )
            vad = [hue * 10, 5 + rng.normal(), 5 + hue]
            rows.append([vid, i % 2, 0, 7, *cats, *vad, 1, 2, 1, 0.9])
        missing = f"999/{split}_missing.mp4/0001.mp4"
        rows.append([missing, 0, 0, 7, *np.zeros(26), 5, 5, 5, 1, 2, 1, 0.9])
        nojoints = f"{rows[0][0]}"
        rows.append([nojoints, 7, 0, 7, *np.zeros(26), 5, 5, 5, 1, 2, 1, 0.9])
        empty = f"998/{split}_empty.mp4/0001.mp4"
        write_video(root / "videos" / empty, (0, 0, 0))
        (root / "joints" / f"998/{split}_empty.mp4").mkdir(parents=True, exist_ok=True)
        np.save(root / "joints" / f"998/{split}_empty.mp4/0001.npy", np.zeros((0, 56), np.float32))
        rows.append([empty, 0, 0, 7, *np.zeros(26), 5, 5, 5, 1, 2, 1, 0.9])
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(root / "annotations" / f"{split}.csv", header=False, index=False)
        broken[split] = {
            f"{missing}#0": "video file missing",
            f"{nojoints}#7": "no non-zero joints",
            f"{empty}#0": "joints file is empty",
        }
    assert len(bold.COLUMNS) == 37
    return broken


# the columns of MELD's {split}_sent_emo.csv, in its order
MELD_COLUMNS = [
    "Sr No.",
    "Utterance",
    "Speaker",
    "Emotion",
    "Sentiment",
    "Dialogue_ID",
    "Utterance_ID",
    "Season",
    "Episode",
    "StartTime",
    "EndTime",
]


def write_meld(folder: Path) -> tuple[Path, Path]:
    """``(root, boxes.json)``: MELD with 9 / 3 / 3 utterances (emotion follows the colour) and one
    person box per 1/8 s of every clip, listed by file name (dev and test reuse train's names)."""
    from emotionclip.detect.json_boxes import write_boxes_json

    root = folder / "meld"
    root.mkdir()
    emotions, colours = ["joy", "anger", "neutral"], [(240, 200, 40), (200, 20, 20), (90, 90, 90)]
    for split, sub, n in (
        ("train", "train_splits", 9),
        ("dev", "dev_splits_complete", 3),
        ("test", "output_repeated_splits_test", 3),
    ):
        rows = [[i, "hi", "Ross", emotions[i % 3], "neutral", 1, i, 1, 1, "0", "1"] for i in range(n)]
        pd.DataFrame(rows, columns=MELD_COLUMNS).to_csv(root / f"{split}_sent_emo.csv", index=False)
        for i in range(n):
            write_video(root / sub / f"dia1_utt{i}.mp4", colours[i % 3])
    times = [k / 8 for k in range(8)]
    boxes = {f"dia1_utt{i}.mp4": (64, 48, times, [np.array([[8, 4, 40, 44, 0.9]])] * 8) for i in range(9)}
    write_boxes_json(folder / "boxes.json", boxes)
    return root, folder / "boxes.json"


def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path
