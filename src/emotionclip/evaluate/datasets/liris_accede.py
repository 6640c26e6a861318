"""LIRIS-ACCEDE continuous induced valence/arousal (MediaEval 2017/2018 "Emotional Impact of Movies").

Layout: per-movie annotation files ``<movie>_Valence-Arousal.txt`` anywhere under the root
(whitespace-separated with a header: ``Time``, then columns whose names contain ``Valence`` and
``Arousal``; one row per second), and the movie files ``<movie>.{mp4,mkv,avi,...}`` anywhere under
the root. Annotation files whose path contains ``test`` form the test split, the others train.

As in the release, each annotated second is one sample seen through ONE frame (the one showing at
that second, repeated for the model's T frames) with person boxes from the detector, and the first
``DROP_HEAD`` and last ``DROP_TAIL`` seconds of each training movie are left out (the release's
8-frame window does not fit there). Test samples keep every second, in movie order, so that the
predictions can be smoothed over the concatenated test set.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ...video_io import VIDEO_EXTENSIONS, VideoError, probe_video
from .common import Sample, SkipList, Split

SPLITS = ("train", "test")
DIMENSIONS = ("valence", "arousal")
# the release: seconds i < ceil(8 / 2) and i > n - floor(8 / 2) of a training movie have no 8-frame window
DROP_HEAD, DROP_TAIL = 4, 3
_SUFFIX = re.compile(r"[_-]+valence[-_]*arousal.*$", re.IGNORECASE)


def annotation_files(root: Path) -> dict[str, list[Path]]:
    found = {s: [] for s in SPLITS}
    for p in sorted(root.rglob("*.txt")):
        if _SUFFIX.search(p.stem):
            found["test" if "test" in str(p.relative_to(root)).lower() else "train"].append(p)
    return found


def read_annotation(path: Path) -> pd.DataFrame:
    """``time, valence, arousal`` rows of one movie."""
    table = pd.read_csv(path, sep=r"\s+")
    cols = {c.lower(): c for c in table.columns}
    pick = [next((cols[c] for c in cols if c.startswith("time")), None)]
    pick += [next((cols[c] for c in cols if d in c), None) for d in DIMENSIONS]
    if None in pick:
        raise ValueError(f"{path}: needs Time, *Valence* and *Arousal* columns, has {list(table.columns)}")
    out = table[pick].astype(np.float64)
    out.columns = ["time", *DIMENSIONS]
    if out.isna().any().any():
        raise ValueError(f"{path}: missing values")
    return out


def load(root: str | Path, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"LIRIS-ACCEDE has splits {SPLITS}, not {split!r}")
    root = Path(root)
    files = annotation_files(root)[split]
    if not files:
        raise FileNotFoundError(f"{root}: no *_Valence-Arousal.txt annotation files for the {split} split")
    videos = {p.stem: p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS}
    skips = SkipList("liris-accede", split)
    samples = []
    for ann in files:
        movie = _SUFFIX.sub("", ann.stem)
        video = videos.get(movie)
        try:
            if video is None:
                raise FileNotFoundError(f"{root}: no video file named {movie}.* for {ann.name}")
            table = read_annotation(ann)
            duration = probe_video(video).duration
        except (FileNotFoundError, ValueError, VideoError) as e:
            skips.add(movie, video or ann, str(e))
            continue
        inside = []
        for t, v, a in table.itertuples(index=False):
            if 0 <= t <= duration:
                inside.append((t, v, a))
            else:
                skips.add(
                    f"{movie}@{t:g}", video, f"annotated second {t:g} is outside the {duration:.1f} s movie"
                )
        if split == "train":
            inside = inside[DROP_HEAD : max(len(inside) - DROP_TAIL, DROP_HEAD)]
        samples += [
            Sample(
                key=f"{movie}@{t:g}",
                path=str(video),
                labels={"va": np.array([v, a], np.float32)},
                instant=float(t),
                detect=True,
                group=movie,
            )
            for t, v, a in inside
        ]
    return Split("liris-accede", split, samples, skips.items, {"va": list(DIMENSIONS)})
