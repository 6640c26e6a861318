"""Batches of videos: analyse or embed each into an output folder; one failure never stops a batch.

Each input gets its own outputs under ``out/``; a failing input is logged, listed in
``out/summary.json`` with its reason, and the batch goes on. ``out/`` is claimed for the tool
(:func:`emotionclip._io.claim_output_dir`): a folder holding anyone else's files is refused, and a
second process writing into it is refused naming the first one's pid.
"""

from __future__ import annotations

import glob
import io
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._io import TEMP_PATTERN, atomic_write, claim_output_dir, input_files, is_output_dir, remove_paths
from ..parts import current_part
from ..video_io import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


def expand_inputs(paths: list[Path], extensions: tuple[str, ...]) -> list[Path]:
    """Files as given (any extension); folders -> their files with ``extensions``, sorted, recursively,
    never those inside an emotionclip output folder (an ``--out`` within the input folder)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(f for f in input_files(path) if f.suffix.lower() in extensions)
            if is_output_dir(path):
                logger.warning("%s: an emotionclip output folder, not read as input", path)
            elif not inside:
                logger.warning("%s: folder holds no %s files", path, "/".join(sorted(extensions)))
            found.extend(inside)
        else:
            found.append(path)  # a missing file fails on its own, with its name, during the batch
    return list(dict.fromkeys(found))


def error_text(path: Path, error: Exception) -> str:
    text = str(error) or type(error).__name__
    return text if str(path) in text else f"{path}: {text}"


def _output_dir(out: Path, source: Path, taken: set[Path], owner) -> Path:
    """``OUT/<stem>``, or ``OUT/<stem>-2``... when that name went to another input of this batch or
    holds the results of another file (``owner(candidate)``: the input whose outputs are there, or None)."""

    def foreign(folder: Path) -> bool:
        other = owner(folder)
        return other is not None and Path(other).resolve() != source.resolve()

    candidate, n = out / source.stem, 1
    while candidate in taken or foreign(candidate):
        n += 1
        candidate = out / f"{source.stem}-{n}"
    taken.add(candidate)
    return candidate


def _analysis_owner(folder: Path) -> str | None:
    try:
        return json.loads((folder / "emotions.json").read_text())["video"]
    except (OSError, ValueError, KeyError):
        return None


def _embedding_owner(stem_path: Path) -> str | None:
    try:
        with np.load(stem_path.with_suffix(".npz")) as f:
            return str(f["source"])
    except (OSError, ValueError, KeyError):
        return None


def _write_summary(out: Path, summary: dict) -> None:
    atomic_write(out / "summary.json", json.dumps(summary, indent=1))
    failed = summary["failed"]
    logger.info(
        "%d done, %d skipped (outputs exist), %d failed; summary: %s",
        len(summary["done"]),
        len(summary["skipped"]),
        len(failed),
        out / "summary.json",
    )
    for item in failed:
        logger.error("failed: %s", item["error"])


def analyze_paths(
    model,
    videos: list[Path],
    out: Path,
    classes=None,
    head=None,
    keyframes=12,
    overwrite=False,
    note=None,
    settings: dict | None = None,
    proxy: bool = True,
    part=None,
    **embed_kwargs,
) -> dict:
    """Analyse each video into ``out/<stem>/``; a failing video is logged and listed, the rest go on.

    Writes ``out/summary.json`` and the overview ``out/index.html``; ``proxy=False`` writes no
    browser copy of videos the browser cannot play (their report then has no player). ``part``
    (``"I/N"``, combined with torchrun's ranks: :mod:`emotionclip.parts`) analyses only this
    process's slice; the last part to finish writes the summary and the overview of all. Returns
    what this process did.
    """
    from ..heads import check_head_or_classes
    from .analyze import probe_scorer, zero_shot_scorer
    from .persons import as_per_person

    check_head_or_classes(head, classes)
    scorer = (
        probe_scorer(head)
        if head is not None
        else zero_shot_scorer(model, classes, device=embed_kwargs.get("device"))
    )
    detector = embed_kwargs.get("detector")
    settings = {
        **(settings or {}),
        "window": embed_kwargs.get("window"),
        "stride": embed_kwargs.get("stride"),
        "video_len": model.video_len,
        "detector": getattr(detector, "name", detector),
        "precision": embed_kwargs.get("precision") or getattr(model, "precision", "fp32"),
        "backend": getattr(model, "backend", "torch"),
        "method": scorer.method,
        "classes": list(scorer.classes),
    }
    people = as_per_person(embed_kwargs.get("per_person"))
    if people is not None:  # only then: the default settings stay as they were
        settings["per_person"] = {"min_share": people.min_share}
    this = current_part(part)
    with claim_output_dir(out, "analyze", part=this and this.name):
        summary = _analyze_each(
            model, videos, Path(out), scorer, settings, keyframes, overwrite, note, proxy, embed_kwargs, this
        )
    return summary


def _analyze_each(
    model, videos, out, scorer, settings, keyframes, overwrite, note, proxy, embed_kwargs, part
):
    from .analyze import run_analysis, union_rows
    from .report import OUTPUT_NAMES, write_index, write_report

    summary = {"settings": settings, "done": [], "skipped": [], "failed": []}
    for video, target in _slice(videos, out, _analysis_owner, part, ""):
        _remove_stale(target.glob(TEMP_PATTERN))  # the folder is this input's (and this part's) alone
        if not overwrite and all((target / name).exists() for name in OUTPUT_NAMES.values()):
            logger.info("%s: outputs already in %s, skipped (--overwrite to redo)", video, target)
            summary["skipped"].append({"video": str(video), "out": str(target)})
            continue
        try:
            analysis = run_analysis(model, video, scorer, keyframes=keyframes, progress=True, **embed_kwargs)
            paths = write_report(analysis, target, note=note, proxy=proxy, **settings)
        except Exception as e:  # one bad video never stops the batch
            logger.error("%s", error_text(video, e), exc_info=logger.isEnabledFor(logging.DEBUG))
            summary["failed"].append({"video": str(video), "error": error_text(video, e)})
            continue
        table = union_rows(analysis.table)
        persons = analysis.embedding.persons
        logger.info(
            "%s: %d windows%s -> %s",
            video,
            len(table),
            "" if persons is None else f", {len(persons.ids)} person(s) in {len(persons)} person-window(s)",
            paths["html"],
        )
        padded = table["window"][table["padded_frames"] > 0].tolist()
        if padded:
            logger.warning("%s: %d window(s) padded (the stream ends early): %s", video, len(padded), padded)
        summary["done"].append(
            {
                "video": str(video),
                "windows": len(table),
                **({} if persons is None else {"persons": len(persons.ids)}),
                "padded_windows": padded,
                **{kind: str(p) for kind, p in paths.items()},
            }
        )
    merged = _finish(out, summary, part, videos, "video")
    if merged is not None:
        write_index(out / "index.html", merged, note=note)
    return summary


def embed_paths(
    model,
    inputs: list[Path],
    out: Path,
    overwrite: bool = False,
    settings: dict | None = None,
    part=None,
    **embed_kwargs,
) -> dict:
    """Embed each video / image into ``out/<stem>.npz``; a failing input is logged and listed, the rest go on.

    ``part`` as in :func:`analyze_paths`. Returns what this process did (all of it without parts).
    """
    this = current_part(part)
    with claim_output_dir(out, "embed", part=this and this.name):
        return _embed_each(model, inputs, Path(out), overwrite, settings, embed_kwargs, this)


def _embed_each(model, inputs, out, overwrite, settings, embed_kwargs, part) -> dict:
    from .analyze import rounded_boxes
    from .embed import embed_image, embed_video
    from .persons import as_per_person

    settings = dict(settings or {}, window=embed_kwargs.get("window"), stride=embed_kwargs.get("stride"))
    people = as_per_person(embed_kwargs.get("per_person"))
    if people is not None:
        settings["per_person"] = {"min_share": people.min_share}
    summary = {
        "settings": settings,
        "done": [],
        "skipped": [],
        "failed": [],
    }
    for path, target in _slice(inputs, out, _embedding_owner, part, ".npz"):
        # only this target's temporaries: other parts write theirs into the same folder
        _remove_stale(out.glob(f".{glob.escape(target.name)}.*.tmp"))
        if target.exists() and not overwrite:
            summary["skipped"].append({"input": str(path), "out": str(target)})
            continue
        try:
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                features = embed_image(
                    model,
                    path,
                    detector=embed_kwargs.get("detector"),
                    device=embed_kwargs.get("device"),
                    precision=embed_kwargs.get("precision"),
                )
                arrays = {"source": np.array(str(path)), "features": features[None].numpy()}
            else:
                e = embed_video(model, path, keyframes=0, progress=True, **embed_kwargs)
                arrays = _video_arrays(e, rounded_boxes)
        except Exception as e:  # one bad input never stops the batch
            logger.error("%s", error_text(path, e))
            summary["failed"].append({"input": str(path), "error": error_text(path, e)})
            continue
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write(target, buf.getvalue())
        done = {"input": str(path), "out": str(target), "rows": len(arrays["features"])}
        if "padded_frames" in arrays:
            done["padded_windows"] = np.flatnonzero(arrays["padded_frames"]).tolist()
            if done["padded_windows"]:
                logger.warning(
                    "%s: window(s) %s padded (the stream ends early)", path, done["padded_windows"]
                )
        summary["done"].append(done)
    _finish(out, summary, part, inputs, "input")
    return summary


def _video_arrays(e, rounded_boxes) -> dict[str, np.ndarray]:
    """The ``.npz`` arrays of a video: one entry per window; with per-person rows one per row (the
    window's union row, then its persons'), with ``window`` and ``person`` ("all" or the id)."""
    windows = np.arange(len(e.starts))
    features, boxes, person = e.features, e.boxes, None
    if e.persons is not None:
        p = e.persons
        order = np.lexsort((np.r_[np.zeros(len(windows)), p.person], np.r_[windows, p.window]))
        windows = np.r_[windows, p.window][order]
        features = torch.cat([e.features, p.features])[order]
        boxes = [(e.boxes + p.boxes)[i] for i in order]
        person = np.array(["all"] * len(e.starts) + [str(k) for k in p.person])[order]
    arrays = {
        "source": np.array(str(e.path)),
        "features": features.numpy(),
        "starts": e.starts[windows],
        "ends": e.ends[windows],
        "has_person": e.has_person[windows] | (person != "all" if person is not None else False),
        "padded_frames": e.padded[windows],
        "boxes": np.array(json.dumps([[rounded_boxes(b) for b in w] for w in boxes])),
    }
    if person is not None:
        arrays.update(window=windows, person=person)
    return arrays


def _remove_stale(temporaries) -> None:
    """Temporaries (``.NAME.*.tmp``) a killed run of ours left, e.g. a half-written ``video.mp4`` proxy."""
    for p in remove_paths(temporaries):
        logger.info("%s: removed, left by an interrupted run", p)


def _slice(inputs, out, owner, part, suffix: str):
    """``(input, target)`` for this process's inputs; targets are named over the whole job's list,
    so every part (and a single process) gives each input the same output."""
    taken: set[Path] = set()
    targets = [_output_dir(out, path, taken, owner) for path in inputs]
    pairs = [(path, t.with_suffix(suffix) if suffix else t) for path, t in zip(inputs, targets, strict=True)]
    if part is not None:
        pairs = part.select(pairs)
        logger.info("%s: %d of %d inputs", part.name, len(pairs), len(inputs))
    return tqdm(pairs, desc="inputs", unit="file")


def _finish(out: Path, summary: dict, part, inputs, key: str) -> dict | None:
    """Write the summary; a part writes its own, and the last part to finish the whole job's."""
    if part is None:
        _write_summary(out, summary)
        return summary
    from filelock import FileLock

    from ..parts import merge_part_summaries, part_summary_path

    atomic_write(part_summary_path(out, part), json.dumps(summary, indent=1))
    with FileLock(str(out / ".emotionclip.lock.summary")):
        merged = merge_part_summaries(out, part, [str(p) for p in inputs], key)
        if merged is None:
            logger.info("%s done; %s is written when every part is", part.name, out / "summary.json")
            return None
        _write_summary(out, merged)
    return merged
