"""Batches of videos: analyse or embed each into an output folder; one failure never stops a batch.

Each input gets its own outputs under ``out/``; a failing input is logged, listed in
``out/summary.json`` with its reason, and the batch goes on (the job runner,
:mod:`emotionclip.jobs`: slices under ``--part`` / torchrun, the part completing the set merges). ``out/`` is claimed for the tool
(:func:`emotionclip._io.claim_output_dir`): a folder holding anyone else's files is refused, and a
second process writing into it is refused naming the first one's pid.
"""

from __future__ import annotations

import functools
import glob
import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from .._io import TEMP_PATTERN, atomic_write, claim_output_dir, input_files, is_output_dir, remove_paths
from ..jobs import ItemJob, current_part, finish_items, run_items, warn_changed_settings
from ..runner import Runner, as_runner
from ..video_io import IMAGE_EXTENSIONS
from .embed import EmbedSettings

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


def analyze_paths(
    model,
    videos: list[Path],
    out: Path,
    classes=None,
    head=None,
    keyframes: int = 12,
    overwrite: bool = False,
    note: str | None = None,
    settings: dict | None = None,
    proxy: bool = True,
    part=None,
    device=None,
    precision: str | None = None,
    embedding: EmbedSettings | None = None,
    **embed,
) -> dict:
    """Analyse each video into ``out/<stem>/``; a failing video is logged and listed, the rest go on.

    Writes ``out/summary.json`` and the overview ``out/index.html``; ``proxy=False`` writes no
    browser copy of videos the browser cannot play (their report then has no player). ``part``
    (``"I/N"``, combined with torchrun's ranks: :mod:`emotionclip.jobs`) analyses only this
    process's slice; the part completing the set writes the summary and the overview of all.
    ``model``, ``device`` and ``precision`` as in :func:`~emotionclip.analyze.embed_video`;
    ``embedding`` (an :class:`~emotionclip.analyze.embed.EmbedSettings`) says how windows are made,
    the other keywords set (or replace) its fields. Returns what this process did.
    """
    from ..heads import check_head_or_classes
    from .analyze import probe_scorer, zero_shot_scorer

    check_head_or_classes(head, classes)
    embed_settings = replace(embedding, **embed) if embedding is not None else EmbedSettings(**embed)
    runner = as_runner(model, device, precision)
    scorer = probe_scorer(head) if head is not None else zero_shot_scorer(runner, classes)
    detector = embed_settings.detector
    settings = {
        **(settings or {}),
        "window": embed_settings.window,
        "stride": embed_settings.stride,
        "video_len": runner.video_len,
        "detector": getattr(detector, "name", detector),
        "precision": runner.precision,
        "backend": runner.backend,
        "method": scorer.method,
        "classes": list(scorer.classes),
        **embed_settings.summary(),
    }
    this = current_part(part)
    out = Path(out)
    with claim_output_dir(out, "analyze", part=this and this.name):
        job = ItemJob(
            "video",
            clean=lambda video, target: _remove_stale(target.glob(TEMP_PATTERN)),
            exists=_report_exists,
            run=functools.partial(
                _analyze_one, runner, scorer, embed_settings, keyframes, note, proxy, settings
            ),
        )
        pairs = _targets(videos, out, _analysis_owner, "")
        warn_changed_settings(out, settings, overwrite)
        summary = run_items(job, pairs, this, settings, overwrite)
        merged = finish_items(out, summary, this, videos, "video")
        if merged is not None:
            from .report import write_index

            write_index(out / "index.html", merged, note=note)
    return summary


def _report_exists(video: Path, target: Path) -> bool:
    from .report import OUTPUT_NAMES

    return all((target / name).exists() for name in OUTPUT_NAMES.values())


def _analyze_one(
    runner: Runner,
    scorer,
    embed: EmbedSettings,
    keyframes: int,
    note: str | None,
    proxy: bool,
    settings: dict,
    video: Path,
    target: Path,
) -> dict:
    from .analyze import run_analysis, union_rows
    from .report import write_report

    analysis = run_analysis(runner, video, scorer, embed, keyframes, progress=True)
    paths = write_report(analysis, target, note=note, proxy=proxy, settings=settings)
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
    return {
        "video": str(video),
        "windows": len(table),
        **({} if persons is None else {"persons": len(persons.ids)}),
        "padded_windows": padded,
        **{kind: str(p) for kind, p in paths.items()},
    }


def embed_paths(
    model,
    inputs: list[Path],
    out: Path,
    overwrite: bool = False,
    settings: dict | None = None,
    part=None,
    device=None,
    precision: str | None = None,
    embedding: EmbedSettings | None = None,
    **embed,
) -> dict:
    """Embed each video / image into ``out/<stem>.npz``; a failing input is logged and listed, the rest go on.

    ``part``, ``model``, ``device``, ``precision``, ``embedding`` and the settings keywords as in
    :func:`analyze_paths`. Returns what this process did (all of it without parts).
    """
    embed_settings = replace(embedding, **embed) if embedding is not None else EmbedSettings(**embed)
    runner = as_runner(model, device, precision)
    settings = dict(settings or {}, **embed_settings.summary())
    this = current_part(part)
    out = Path(out)
    with claim_output_dir(out, "embed", part=this and this.name):
        # only this target's temporaries: other parts write theirs into the same folder
        clean = lambda path, target: _remove_stale(out.glob(f".{glob.escape(target.name)}.*.tmp"))  # noqa: E731
        job = ItemJob(
            "input",
            clean=clean,
            exists=lambda path, target: target.exists(),
            run=functools.partial(_embed_one, runner, embed_settings),
        )
        warn_changed_settings(out, settings, overwrite)
        summary = run_items(job, _targets(inputs, out, _embedding_owner, ".npz"), this, settings, overwrite)
        finish_items(out, summary, this, inputs, "input")
    return summary


def _embed_one(runner: Runner, embed: EmbedSettings, path: Path, target: Path) -> dict:
    from .analyze import rounded_boxes
    from .embed import embed_image, embed_windows

    if path.suffix.lower() in IMAGE_EXTENSIONS:
        features = embed_image(runner, path, detector=embed.detector)
        arrays = {"source": np.array(str(path)), "features": features[None].numpy()}
    else:
        arrays = _video_arrays(embed_windows(runner, path, embed, keyframes=0, progress=True), rounded_boxes)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(target, buf.getvalue())
    done = {"input": str(path), "out": str(target), "rows": len(arrays["features"])}
    if "padded_frames" in arrays:
        done["padded_windows"] = np.flatnonzero(arrays["padded_frames"]).tolist()
        if done["padded_windows"]:
            logger.warning("%s: window(s) %s padded (the stream ends early)", path, done["padded_windows"])
    return done


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


def _targets(inputs, out: Path, owner, suffix: str) -> list[tuple[Path, Path]]:
    """``(input, target)`` for every input of the whole job: every part (and a single process) gives
    each input the same output."""
    taken: set[Path] = set()
    targets = [_output_dir(out, path, taken, owner) for path in inputs]
    return [(path, t.with_suffix(suffix) if suffix else t) for path, t in zip(inputs, targets, strict=True)]
