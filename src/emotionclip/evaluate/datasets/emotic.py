"""Emotic: images with a target person's box, 26 categories (+ continuous VAD).

Layout produced by the widely used ``mat2py`` conversion: ``{split}.csv`` (``Folder, Filename,
Image Size, BBox, ...``; ``Image Size`` = ``[width, height]``, ``BBox`` = ``[x1, y1, x2, y2]`` in
those pixels), ``{split}_cat_arr.npy`` (26 columns) and ``{split}_cont_arr.npy`` beside it, images
under ``emotic/<Folder>/<Filename>``. The CSV may also be named ``annot_arrs_{split}.csv`` or sit in
``annotations_pre/``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd

from ...constants import EMOTIC_CATEGORIES
from .common import Sample, SkipList, Split, find_first, require_file

CATEGORIES = EMOTIC_CATEGORIES
SPLITS = ("train", "val", "test")


def _numbers(text, n: int) -> list[float] | None:
    try:
        v = [float(x) for x in ast.literal_eval(str(text))]
    except (ValueError, SyntaxError, TypeError):
        return None
    return v if len(v) == n and np.isfinite(v).all() else None


def load(root: str | Path, split: str) -> Split:
    if split not in SPLITS:
        raise ValueError(f"Emotic has splits {SPLITS}, not {split!r}")
    root = Path(root)
    csv = find_first(
        root,
        [f"{split}.csv", f"annot_arrs_{split}.csv", f"annotations_pre/{split}.csv"],
        f"Emotic {split} annotations",
    )
    table = pd.read_csv(csv)
    missing = {"Folder", "Filename", "Image Size", "BBox"} - set(table.columns)
    if missing:
        raise ValueError(f"{csv}: not an Emotic annotation file (missing columns {sorted(missing)})")
    cat_path = require_file(csv.parent / f"{split}_cat_arr.npy", "Emotic category labels")
    cats = np.load(cat_path, allow_pickle=False).astype(np.float32)
    if cats.shape != (len(table), len(CATEGORIES)):
        raise ValueError(
            f"{cat_path}: expected shape [{len(table)}, {len(CATEGORIES)}], got {list(cats.shape)}"
        )
    cont_path = csv.parent / f"{split}_cont_arr.npy"
    cont = np.load(cont_path, allow_pickle=False).astype(np.float32) if cont_path.is_file() else None
    if cont is not None and len(cont) != len(table):
        raise ValueError(f"{cont_path}: {len(cont)} rows for {len(table)} annotations")
    images = root / "emotic" if (root / "emotic").is_dir() else root
    skips = SkipList("emotic", split)
    samples = []
    for i, (folder, name, size, bbox) in enumerate(
        zip(table["Folder"], table["Filename"], table["Image Size"], table["BBox"], strict=True)
    ):
        path = images / str(folder) / str(name)
        key = f"{folder}/{name}#{i}"
        wh, box = _numbers(size, 2), _numbers(bbox, 4)
        if not path.is_file():
            skips.add(key, path, "image file missing")
        elif wh is None or box is None:
            skips.add(key, path, f"unreadable Image Size {size!r} or BBox {bbox!r}")
        elif not (box[0] < min(box[2], wh[0]) and box[1] < min(box[3], wh[1]) and box[2] > 0 and box[3] > 0):
            skips.add(key, path, f"box {box} lies outside the {int(wh[0])}x{int(wh[1])} image or is empty")
        else:
            labels = {"categories": cats[i]}
            if cont is not None:
                labels["vad"] = cont[i]
            samples.append(
                Sample(
                    key=key,
                    path=str(path),
                    labels=labels,
                    kind="image",
                    box=tuple(box),
                    box_frame_size=(int(wh[0]), int(wh[1])),
                )
            )
    names = {"categories": list(CATEGORIES)}
    if cont is not None:
        names["vad"] = ["valence", "arousal", "dominance"]
    return Split("emotic", split, samples, skips.items, names)
