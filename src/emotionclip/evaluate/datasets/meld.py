"""MELD: Friends utterances, 7 emotions (official ``MELD.Raw`` layout).

``{split}_sent_emo.csv`` (``Sr No., Utterance, Speaker, Emotion, Sentiment, Dialogue_ID,
Utterance_ID, ...``) and one clip per utterance, ``<videos dir>/dia{D}_utt{U}.mp4``. Subject boxes
come from the person detector (no boxes ship with MELD).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .common import Sample, SkipList, Split, find_first

EMOTIONS = ("neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger")  # the release's order
SENTIMENTS = ("neutral", "positive", "negative")
SPLITS = ("train", "dev", "test")
VIDEO_DIRS = {"train": "train_splits", "dev": "dev_splits_complete", "test": "output_repeated_splits_test"}
# utterances whose video is missing or undecodable in the official download
KNOWN_BROKEN = {"train": {(125, 3)}, "dev": {(110, 7)}, "test": set()}


def _csv_path(root: Path, split: str) -> Path:
    name = f"{split}_sent_emo.csv"
    return find_first(root, [name, f"MELD.Raw/{name}", f"{split}/{name}"], f"MELD {split} annotations")


def _video_dir(root: Path, split: str) -> Path:
    d = VIDEO_DIRS[split]
    return find_first(
        root, [d, f"MELD.Raw/{d}", f"{split}/{d}", f"MELD.Raw/{split}/{d}"], f"MELD {split} videos"
    )


def load(root: str | Path, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"MELD has splits {SPLITS}, not {split!r}")
    root = Path(root)
    csv = _csv_path(root, split)
    table = pd.read_csv(csv, encoding_errors="replace")
    missing = {"Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv}: not a MELD annotation file (missing columns {sorted(missing)})")
    videos = _video_dir(root, split)
    present = {p.name for p in videos.iterdir()}
    skips = SkipList("meld", split)
    samples = []
    emo = {e: i for i, e in enumerate(EMOTIONS)}
    sen = {s: i for i, s in enumerate(SENTIMENTS)}
    for d, u, e, s in zip(
        table["Dialogue_ID"], table["Utterance_ID"], table["Emotion"], table["Sentiment"], strict=True
    ):
        key = f"dia{d}_utt{u}"
        path = videos / f"{key}.mp4"
        e, s = str(e).strip().lower(), str(s).strip().lower()
        if (int(d), int(u)) in KNOWN_BROKEN[split]:
            skips.add(key, path, "known broken utterance in the official MELD release")
        elif path.name not in present:
            skips.add(key, path, "video file missing")
        elif path.stat().st_size == 0:
            skips.add(key, path, "video file is empty (0 bytes)")
        elif e not in emo or s not in sen:
            skips.add(key, path, f"unknown emotion/sentiment label {e!r}/{s!r} in {csv.name}")
        else:
            labels = {"emotion": np.int64(emo[e]), "sentiment": np.int64(sen[s])}
            samples.append(Sample(key=key, path=str(path), labels=labels, detect=True))
    return Split(
        "meld", split, samples, skips.items, {"emotion": list(EMOTIONS), "sentiment": list(SENTIMENTS)}
    )
