"""BoLD (Body Language Dataset): 26 categories + valence/arousal/dominance per person and clip.

Official ``BOLD_public`` layout: ``annotations/{train,val}.csv`` without header (``video_id,
person_id, start_frame, end_frame``, 26 category scores, ``valence, arousal, dominance, gender, age,
ethnicity, confidence``), clips ``videos/<video_id>`` and OpenPose joints
``joints/<video_id minus extension>.npy`` with rows ``[frame, person, 18 x (x, y, conf)]``.
The target person's box in a frame is the extent of its non-zero joints; as in the release, joint
frame numbers count from the first frame in the joints file and the 8 frames are sampled
uniformly over the whole clip.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import Sample, SkipList, Split, require_file

CATEGORIES = (
    "peace",
    "affection",
    "esteem",
    "anticipation",
    "engagement",
    "confidence",
    "happiness",
    "pleasure",
    "excitement",
    "surprise",
    "sympathy",
    "doubt/confusion",
    "disconnection",
    "fatigue",
    "embarrassment",
    "yearning",
    "disapproval",
    "aversion",
    "annoyance",
    "anger",
    "sensitivity",
    "sadness",
    "disquietment",
    "fear",
    "pain",
    "suffering",
)
VAD = ("valence", "arousal", "dominance")
COLUMNS = ["video_id", "person_id", "start_frame", "end_frame", *CATEGORIES, *VAD] + [
    "gender",
    "age",
    "ethnicity",
    "annotation_confidence",
]
SPLITS = ("train", "val")


def person_boxes(joints: np.ndarray, person: int) -> dict[int, np.ndarray]:
    """Per relative frame number, the ``[1, 5]`` box around the person's non-zero joints."""
    first = joints[:, 0].min()
    rows = joints[joints[:, 1] == person]
    pts = rows[:, 2:].reshape(len(rows), 18, 3)
    valid = ~np.all(pts == 0, axis=2)  # [n, 18]; OpenPose writes undetected joints as zeros
    has = valid.any(axis=1)
    pts, valid, frames = pts[has], valid[has], (rows[has, 0] - first).astype(np.int64)
    x = np.where(valid, pts[..., 0], np.nan)
    y = np.where(valid, pts[..., 1], np.nan)
    boxes = np.stack(
        [
            np.floor(np.nanmin(x, 1)),
            np.floor(np.nanmin(y, 1)),
            np.ceil(np.nanmax(x, 1)),
            np.ceil(np.nanmax(y, 1)),
            np.ones(len(x)),
        ],
        axis=1,
    ).astype(np.float32)
    return {int(f): b[None] for f, b in zip(frames, boxes, strict=True)}


def load(root: str | Path, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"BoLD has splits {SPLITS}, not {split!r}")
    root = Path(root)
    csv = require_file(root / "annotations" / f"{split}.csv", f"BoLD {split} annotations")
    table = pd.read_csv(csv, header=None)
    if table.shape[1] != len(COLUMNS):
        raise ValueError(f"{csv}: expected {len(COLUMNS)} columns (BoLD layout), found {table.shape[1]}")
    table.columns = COLUMNS
    skips = SkipList("bold", split)
    samples = []
    joints_cache: dict[str, np.ndarray | str] = {}
    cats = (table[list(CATEGORIES)].to_numpy(np.float32) >= 0.5).astype(np.float32)
    vad = table[list(VAD)].to_numpy(np.float32)
    for i, (vid, person) in enumerate(zip(table["video_id"], table["person_id"], strict=True)):
        vid, person = str(vid), int(person)
        key = f"{vid}#{person}"
        video = root / "videos" / vid
        jpath = root / "joints" / (str(Path(vid).with_suffix("")) + ".npy")
        if not video.is_file():
            skips.add(key, video, "video file missing")
            continue
        if vid not in joints_cache:
            joints_cache[vid] = _read_joints(jpath)
        joints = joints_cache[vid]
        if isinstance(joints, str):
            skips.add(key, jpath, joints)
            continue
        boxes = person_boxes(joints, person)
        if not boxes:
            skips.add(key, jpath, f"no non-zero joints for person {person}")
            continue
        labels = {"categories": cats[i], "vad": vad[i]}
        samples.append(Sample(key=key, path=str(video), labels=labels, frame_boxes=boxes))
    return Split("bold", split, samples, skips.items, {"categories": list(CATEGORIES), "vad": list(VAD)})


def _read_joints(path: Path) -> np.ndarray | str:
    """The joints array, or the reason it cannot be used."""
    if not path.is_file():
        return "joints file missing"
    try:
        joints = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as e:
        return f"cannot read joints ({e})"
    if joints.size == 0:
        return "joints file is empty"
    if joints.ndim != 2 or joints.shape[1] != 2 + 18 * 3:
        return f"joints must be [N, 56] (frame, person, 18 x (x, y, conf)), got {list(joints.shape)}"
    return joints
