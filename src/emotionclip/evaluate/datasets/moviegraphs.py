"""MovieGraphs: movie clips (scenes) with emotion attributes clustered into 26 Emotic-style labels.

Layout (as the release used it; paths relative to the root, the ``official/`` prefix optional):
``mg/py3loader/emotion_labels.json`` (or ``emotion_labels.json``: ``{movie: {clip_index: [label,
...]}}`` with the 26 cluster names below), ``mg/split.json`` (or ``split.json``: ``{"train": [movies],
"val": [...], "test": [...]}``), ``mg_videoinfo/scene_boundaries/<movie>.scenes.gt`` (one line per
clip: ``start_shot end_shot is_useful``, shots counted from 1), ``mg_videoinfo/video_boundaries/
<movie>.videvents`` (a header line, then ``frame time CUT`` for each shot change) and the movie files
``videos/<movie>.{mp4,mkv,avi}``. Subject boxes come from the person detector.

As in the release, a clip is the frames from its first shot's first frame to its last shot's last
frame (the frame before the next cut); a clip ending with the movie's last shot is
``SHOT_TAIL_FRAMES`` frames long from its start, and a clip listed with no labels keeps an all-zero
target (it counts as a miss in top-1 hit).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ...video_io import VIDEO_EXTENSIONS
from .common import Sample, SkipList, Split, find_first
from .emotic import CATEGORIES as EMOTIC_CATEGORIES

# the release clustered MovieGraphs' free-form emotions onto Emotic's 26 categories
CATEGORIES = EMOTIC_CATEGORIES
ALIASES = {"doubt/conf": "doubt/confusion", "doubt confusion": "doubt/confusion"}
SPLITS = ("train", "val", "test")


def _info(root: Path, rel: str, what: str) -> Path:
    return find_first(root, [rel, f"official/{rel}"], what)


SHOT_TAIL_FRAMES = 8 * 24  # the release: a clip ending with the last shot lasts 8 s at 24 fps


def shot_start_frames(path: Path) -> np.ndarray:
    """First frame of every shot: 0 for the first, then the ``frame`` of each cut."""
    cuts = pd.read_csv(path, skiprows=1, header=None, sep=r"\s+", usecols=[0, 1], names=["frame", "time"])
    return np.concatenate([[0], cuts["frame"].to_numpy(np.int64)])


def load(root: str | Path, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"MovieGraphs has splits {SPLITS}, not {split!r}")
    root = Path(root)
    labels_path = find_first(
        root,
        [
            "emotion_labels.json",
            "mg/py3loader/emotion_labels.json",
            "official/mg/py3loader/emotion_labels.json",
        ],
        "MovieGraphs emotion labels",
    )
    split_path = find_first(
        root, ["split.json", "mg/split.json", "official/mg/split.json"], "MovieGraphs split"
    )
    raw = json.loads(labels_path.read_text())
    movies = json.loads(split_path.read_text()).get(split)
    if movies is None:
        raise ValueError(f"{split_path}: no {split!r} list")
    index = {c: i for i, c in enumerate(CATEGORIES)}
    skips = SkipList("moviegraphs", split)
    samples = []
    for movie in movies:
        clips = raw.get(movie, {})
        video = next(
            (
                root / "videos" / f"{movie}{e}"
                for e in VIDEO_EXTENSIONS
                if (root / "videos" / f"{movie}{e}").is_file()
            ),
            None,
        )
        try:
            scenes = pd.read_csv(
                _info(root, f"mg_videoinfo/scene_boundaries/{movie}.scenes.gt", f"{movie} scene boundaries"),
                header=None,
                sep=r"\s+",
                usecols=[0, 1],
                names=["start_shot", "end_shot"],
            )
            shots = shot_start_frames(
                _info(root, f"mg_videoinfo/video_boundaries/{movie}.videvents", f"{movie} shot boundaries")
            )
        except (FileNotFoundError, ValueError) as e:
            for clip in clips:
                skips.add(f"{movie}/{clip}", root, str(e))
            continue
        for clip, names in clips.items():
            key = f"{movie}/{clip}"
            names = [ALIASES.get(str(n).lower(), str(n).lower()) for n in names]
            unknown = [n for n in names if n not in index]
            if video is None:
                skips.add(key, root / "videos" / f"{movie}.mp4", "movie file missing")
            elif not str(clip).isdigit() or int(clip) >= len(scenes):
                skips.add(key, video, f"clip {clip} has no scene boundary ({len(scenes)} scenes)")
            elif unknown:
                skips.add(key, video, f"unknown emotion labels {unknown}")
            else:
                first, last = (int(v) for v in scenes.iloc[int(clip)])
                if not 1 <= first <= last <= len(shots):
                    skips.add(key, video, f"shots {first}-{last} outside the {len(shots)} shots of the movie")
                    continue
                start = int(shots[first - 1])
                end = int(shots[last]) - 1 if last < len(shots) else start + SHOT_TAIL_FRAMES
                target = np.zeros(len(CATEGORIES), np.float32)
                target[[index[n] for n in names]] = 1
                samples.append(
                    Sample(
                        key=key,
                        path=str(video),
                        labels={"categories": target},
                        first_frame=start,
                        last_frame=end,
                        detect=True,
                        group=movie,
                    )
                )
    return Split("moviegraphs", split, samples, skips.items, {"categories": list(CATEGORIES)})
