"""``evaluate(checkpoint, dataset, root)``: the paper's linear-probe protocol on one benchmark.

Frozen features (cached) -> probe fitted on the training split -> metrics on the evaluation
splits -> ``<out>/<dataset>_metrics.json`` + ``.md`` table + plots + the fitted probe heads.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.signal import savgol_filter

from .._io import atomic_write, claim_output_dir
from ..jobs import Part, current_part, parts_lock, rank_device
from ..precision import autocast, check_precision, default_precision
from ..runner import Runner, load_runner
from ..transform import PreprocessConfig
from . import metrics as M
from .benchmarks import BENCHMARKS, Task
from .datasets import Split, load_split
from .features import (
    Features,
    Protocol,
    assemble_parts,
    cached_features,
    cached_split,
    checkpoint_hash,
    extract_features,
)
from .probe import LinearProbe, ProbeHead

logger = logging.getLogger(__name__)


SAVGOL_WINDOW, SAVGOL_ORDER = 100, 3  # the release's smoothing of LIRIS-ACCEDE predictions


def smooth(pred: np.ndarray) -> np.ndarray:
    """The release's smoothing: Savitzky-Golay (window 100, order 3) along all ``pred`` rows at once
    (the test movies concatenated); a shorter split uses a window of its length."""
    window = min(SAVGOL_WINDOW, len(pred))
    if window <= SAVGOL_ORDER:
        return pred.copy()
    return savgol_filter(pred, window_length=window, polyorder=SAVGOL_ORDER, axis=0)


def smooth_per_group(pred: np.ndarray, groups: list[str]) -> np.ndarray:
    """:func:`smooth` along each group's samples (in their order): no filter across a movie boundary."""
    out = pred.copy()
    groups_arr = np.asarray(groups)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups_arr == g)
        out[idx] = smooth(pred[idx])
    return out


PER_MOVIE = "per-movie smoothing"  # the variant row's suffix


def score(
    task: Task, y: np.ndarray, scores: np.ndarray, names: list[str], macro: str = "defined"
) -> dict[str, float]:
    """The task's metrics; classification ones in percent as the paper reports them. ``macro``: how
    mAP treats a class with one label value in the split (:func:`metrics.macro_map`)."""
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "mAP":
            out[m] = 100 * M.macro_map(y, scores, macro)
        elif m == "AUC":
            out[m] = 100 * M.macro_roc_auc(y, scores)
        elif m == "R2":
            out[m] = 100 * M.r2(y, scores)
        elif m == "top1_hit":
            out[m] = 100 * M.top1_hit(y, scores)
        elif m == "weighted_F1":
            out[m] = 100 * M.weighted_f1(y, scores.argmax(1))
        elif m == "accuracy":
            out[m] = 100 * M.accuracy(y, scores.argmax(1))
        elif m in ("MSE", "PCC"):
            per = M.mse(y, scores) if m == "MSE" else M.pearson_r(y, scores)
            out.update({f"{n}_{m}": float(v) for n, v in zip(names, per, strict=True)})
            out[m] = float(np.mean(per))
    return out


def _xy(split: Split, feats: Features, label: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, labels and groups of the split's encoded samples, in the split's order (smoothing
    runs along it)."""
    row = {k: i for i, k in enumerate(feats.keys)}
    used = [s for s in split.samples if s.key in row]
    if not used:
        return np.zeros((0, feats.features.shape[-1]), np.float32), np.zeros((0,)), []
    x = feats.features[[row[s.key] for s in used]]
    return x, np.stack([np.asarray(s.labels[label]) for s in used]), [s.group for s in used]


def run_probes(
    dataset: str,
    splits: dict[str, Split],
    feats: dict[str, Features],
    solver: str = "torch",
    device: str | None = None,
    macro: str = "defined",
) -> tuple[dict[str, dict[str, float]], dict[str, ProbeHead], dict[str, dict]]:
    """Fit each task's probe on the training split; metrics per evaluation split (``macro``: see
    :func:`score`).

    Returns ``(metrics[split], heads[task label], predictions[task][split] = (y, scores))``.
    """
    bench = BENCHMARKS[dataset]
    train = splits[bench.train]
    results: dict[str, dict[str, float]] = {s: {} for s in bench.evals}
    heads, predictions = {}, {}
    for task in bench.tasks:
        names = train.class_names[task.label]
        x, y, _ = _xy(train, feats[bench.train], task.label)
        if len(x) == 0:
            raise ValueError(f"{dataset}/{bench.train}: no usable training samples")
        head = LinearProbe(task.kind, task.c, solver=solver, device=device).fit(x, y, names)
        head.meta.update({"dataset": dataset, "label": task.label, "train_samples": len(x)})
        heads[task.label] = head
        predictions[task.label] = {}
        for s in bench.evals:
            xe, ye, groups = _xy(splits[s], feats[s], task.label)
            if len(xe) == 0:
                logger.warning("%s/%s: no usable samples, no metrics", dataset, s)
                continue
            p = head.predict(xe)
            if task.smooth:
                variant = f"{s} ({PER_MOVIE})"
                results.setdefault(variant, {}).update(
                    score(task, ye, smooth_per_group(p, groups), names, macro)
                )
                p = smooth(p)
            results[s].update(score(task, ye, p, names, macro))
            predictions[task.label][s] = (ye, p)
    return results, heads, predictions


def _default_protocol(
    model_frames: int,
    image_size: int,
    detector: str | None,
    precision: str,
    backend: str = "torch",
    track: bool = True,
) -> Protocol:
    return Protocol(
        num_frames=model_frames,
        image_size=image_size,
        video_resize=PreprocessConfig.for_crop(image_size).resize,
        image_resize=image_size,
        detector=detector,
        track=track,
        precision=precision,
        backend=backend,
    )


def build_runner(checkpoint, device, backend: str | None, precision: str | None) -> tuple[Runner, str, str]:
    """``(runner, protocol precision, protocol backend)``: what keys the feature cache. A torch run
    keys its precision; an exported graph keys its backend name (precision included) at fp32."""
    runner = load_runner(checkpoint, device, precision, backend or "torch")
    if runner.backend.startswith("torch-"):  # torch asked for, or auto's choice
        return runner, runner.precision, "torch"
    return runner, "fp32", runner.backend


def _no_detector(name: str | None) -> str | None:
    return None if not name or name.lower() == "none" else name


def _splits(dataset: str, root: str | Path) -> dict[str, Split]:
    if dataset not in BENCHMARKS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[dataset]
    return {s: load_split(dataset, root, s) for s in (bench.train, *bench.evals)}


def _model_shape(get_runner: Callable[[], Runner], ckpt_sha: str, cache_dir: Path) -> tuple[int, int]:
    """``(video_len, image_size)`` of a checkpoint, remembered beside the feature cache so that a
    fully cached run does not load the model at all."""
    memo = cache_dir / f"model-{ckpt_sha[:16]}.json"
    if memo.is_file():
        shape = json.loads(memo.read_text())
        return int(shape["video_len"]), int(shape["image_size"])
    runner = get_runner()
    atomic_write(memo, json.dumps({"video_len": runner.video_len, "image_size": runner.image_size}))
    return runner.video_len, runner.image_size


def evaluate(
    checkpoint: str | Path,
    dataset: str,
    root: str | Path,
    *,
    out_dir: str | Path = "eval_results",
    cache_dir: str | Path | None = None,
    solver: str = "torch",
    compare_sklearn: bool = False,
    detector: str | None = "default",
    track: bool = True,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    num_frames: int | None = None,
    overwrite: bool = False,
    backend: str | None = None,
    part: str | Part | None = None,
    macro: str = "defined",
) -> dict:
    """Run the benchmark's linear-probe protocol and write ``<out_dir>/<dataset>_metrics.{json,md}``.

    ``solver``: ``"torch"`` (fast L-BFGS) or ``"sklearn"`` (the release's reference);
    ``compare_sklearn`` also fits the reference and reports both. ``detector``: the person detector
    for the benchmarks without boxes (MELD, MovieGraphs, LIRIS-ACCEDE), ``"default"`` as the release
    (which used person masks there), ``"json:PATH"``, ... or ``None`` / ``"none"`` for no subject
    mask; ``track=False`` detects each frame alone, as the release (default: people are followed through
    a sample's frames, :mod:`emotionclip.detect.track`). ``precision``: ``fp32 | bf16 | fp16`` (default: :func:`emotionclip.precision.default_precision`
    of the device: bf16 on recent GPUs, fp16 on older ones, fp32 on the CPU). ``backend``: what
    runs the model (:mod:`emotionclip.backends`; default torch). ``macro``: ``"defined"`` averages
    mAP over the classes present and absent in the split, ``"release"`` over all of them with AP 0
    for an absent class (scikit-learn's, the release's numbers). Returns the dict written as JSON.

    ``part`` (``"I/N"``, combined with torchrun / srun ranks: :mod:`emotionclip.jobs`) extracts
    only this process's slice of every split into its own file in the cache; the process that
    completes the set assembles the splits' caches and fits the probes. A process that does not
    returns ``{"dataset", "part", "pending": {split: [parts not written yet]}}`` (empty when
    another process fits the probes).
    """
    out_dir = Path(out_dir)
    this = current_part(part)
    dev = rank_device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    precision = check_precision(precision or default_precision(dev))
    autocast(dev, precision)  # refuses fp16 on the CPU before any work
    if macro not in M.MACRO_MODES:
        raise ValueError(f"macro must be one of {M.MACRO_MODES}, got {macro!r}")
    with claim_output_dir(out_dir, "evaluate", part=this and this.name):
        json_path = out_dir / f"{dataset}_metrics.json"
        if json_path.exists() and not overwrite:
            raise FileExistsError(
                f"{json_path}: already exists (use overwrite=True / --overwrite to replace it)"
            )
        splits = _splits(dataset, root)
        cache = Path(cache_dir) if cache_dir is not None else out_dir / "feature_cache"
        started = time.time()
        protocol, feats, ckpt_sha = _features(
            checkpoint,
            splits,
            cache,
            detector=detector,
            track=track,
            device=dev,
            precision=precision,
            num_frames=num_frames,
            backend=backend,
            batch_size=batch_size,
            num_workers=num_workers,
            part=this,
        )
        extract_s = time.time() - started
        probe = functools.partial(
            _probe_and_write,
            out_dir,
            dataset,
            root,
            checkpoint,
            ckpt_sha,
            protocol,
            splits,
            solver=solver,
            compare_sklearn=compare_sklearn,
            macro=macro,
            device=dev,
            extract_s=extract_s,
        )
        if this is None:
            return probe(feats)
        # one process at a time decides who completes the set (and fits the probes while holding it)
        with parts_lock(cache):
            return _finish_part(this, feats, splits, protocol, cache, checkpoint, ckpt_sha, json_path, probe)


def _finish_part(this: Part, feats, splits, protocol, cache, checkpoint, ckpt_sha, json_path, probe) -> dict:
    """Assemble the splits whose parts are all there; fit the probes if this process completed the
    set (or, every feature cached when it started, as part 0 or where no metrics were written)."""
    cached_at_start = all(f is not None for f in feats.values())
    completed = False
    pending: dict[str, list[str]] = {}
    for name, sp in splits.items():
        if feats[name] is None:  # another part may have assembled it meanwhile
            feats[name] = cached_split(sp, protocol, cache, ckpt_sha)
        if feats[name] is None:
            feats[name], missing = assemble_parts(sp, protocol, cache, checkpoint, this.count, ckpt_sha)
            completed = completed or not missing
            if missing:
                pending[name] = missing
    dataset = next(iter(splits.values())).dataset
    if pending:
        logger.info(
            "%s %s: features written; waiting for %s; the last part to finish fits the probes",
            dataset,
            this.name,
            "; ".join(f"{split}: {', '.join(parts)}" for split, parts in pending.items()),
        )
        return {"dataset": dataset, "part": this.name, "pending": pending}
    if completed or not json_path.exists() or (cached_at_start and this.index == 0):
        return probe(feats)
    logger.info(
        "%s %s: every feature is cached; %s",
        dataset,
        this.name,
        "part 0 fits the probes" if cached_at_start else f"the part that completed the set wrote {json_path}",
    )
    return {"dataset": dataset, "part": this.name, "pending": {}}


def _probe_and_write(
    out_dir: Path,
    dataset: str,
    root,
    checkpoint,
    ckpt_sha: str,
    protocol: Protocol,
    splits: dict[str, Split],
    feats: dict[str, Features],
    *,
    solver: str,
    compare_sklearn: bool,
    device,
    extract_s: float,
    macro: str = "defined",
) -> dict:
    t0 = time.time()
    metrics, heads, predictions = run_probes(
        dataset, splits, feats, solver=solver, device=device, macro=macro
    )
    result = {
        "dataset": dataset,
        "root": str(root),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ckpt_sha,
        "protocol": asdict(protocol),
        "solver": solver,
        "macro": macro,
        "metrics": metrics,
        "counts": {
            n: {
                "samples": len(sp.samples),
                "skipped": len(sp.skipped),
                "failed": len(feats[n].failed),
                "used": len(feats[n].keys),
            }
            for n, sp in splits.items()
        },
        "seconds": {"features": round(extract_s, 2), "probe": round(time.time() - t0, 3)},
    }
    if compare_sklearn and solver != "sklearn":
        t0 = time.time()
        ref, _, _ = run_probes(dataset, splits, feats, solver="sklearn", macro=macro)
        result["seconds"]["probe_sklearn"] = round(time.time() - t0, 3)
        result["metrics_sklearn"] = ref
        result["max_abs_difference"] = max(
            (abs(v - ref[s][m]) for s in metrics for m, v in metrics[s].items()), default=0.0
        )
    _write_outputs(out_dir, result, splits, feats, heads, predictions)
    return result


def _features(
    checkpoint,
    splits: dict[str, Split],
    cache_dir: Path,
    *,
    detector,
    device: str,
    precision: str,
    num_frames,
    track: bool,
    backend: str | None,
    batch_size: int,
    num_workers: int,
    part: Part | None,
) -> tuple[Protocol, dict[str, Features | None], str]:
    """Every split's features through the cache; the runner is built only on a miss (``device`` and
    ``precision`` as :func:`evaluate` settled them). With ``part`` a split is None where only this
    part's slice is cached (:func:`cached_features`)."""
    needs_detector = any(x.detect for sp in splits.values() for x in sp.samples)
    det_name = _no_detector(detector) if needs_detector else None
    ckpt_sha = checkpoint_hash(checkpoint)
    if backend in (None, "torch"):
        get_runner = functools.cache(functools.partial(load_runner, checkpoint, device, precision, "torch"))
        backend = "torch"
    else:  # the backend (auto's choice) keys the cache: built now
        runner, precision, backend = build_runner(checkpoint, device, backend, precision)
        get_runner = functools.partial(lambda r: r, runner)
    video_len, size = _model_shape(get_runner, ckpt_sha, cache_dir)
    protocol = _default_protocol(num_frames or video_len, size, det_name, precision, backend, track=track)
    det = None
    if det_name:
        from ..detect import resolve_detector

        det = resolve_detector(det_name)
    feats = {
        name: cached_features(
            sp,
            protocol,
            cache_dir,
            checkpoint,
            get_runner,
            ckpt_sha=ckpt_sha,
            detector=det,
            part=part,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        for name, sp in splits.items()
    }
    return protocol, feats, ckpt_sha


def _write_outputs(out_dir: Path, result: dict, splits, feats, heads, predictions) -> None:
    """Probe heads, plots, the Markdown table and (last, so that it marks a finished run) the JSON."""
    from .report import write_plots, write_table

    dataset = result["dataset"]
    for label, head in heads.items():
        head.meta["checkpoint_sha256"] = result["checkpoint_sha256"]
        result.setdefault("probe_heads", {})[label] = str(
            head.save(out_dir / f"{dataset}_probe_{label}", overwrite=True)
        )
    result["plots"] = write_plots(out_dir, dataset, splits, heads, predictions)
    result["skipped"] = {n: sp.skipped for n, sp in splits.items() if sp.skipped}
    result["failed"] = {n: f.failed for n, f in feats.items() if f.failed}
    table = write_table(out_dir / f"{dataset}_metrics.md", result)
    json_path = out_dir / f"{dataset}_metrics.json"
    atomic_write(json_path, json.dumps(result, indent=2))
    logger.info("wrote %s and %s\n%s", json_path, out_dir / f"{dataset}_metrics.md", table)


def make_probe_evaluator(
    dataset: str,
    root: str | Path,
    *,
    max_samples: int | None = None,
    solver: str = "torch",
    detector: str | None = "default",
    track: bool = True,
    device: str | None = None,
    precision: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    macro: str = "defined",
) -> Callable[[torch.nn.Module, int], dict[str, float]]:
    """An evaluation hook for training: ``hook(model, step) -> {"<dataset>/<split>/<metric>": value}``.

    Splits are loaded once (the first ``max_samples`` of each, if given); each call extracts
    features from the model as it is now (no cache, the weights change) and fits the probes.
    ``detector``, ``track``, ``precision`` and ``macro`` as in :func:`evaluate`; the model is never moved or left in
    eval mode (another ``device`` encodes with a copy).
    """
    splits = _splits(dataset, root)
    if max_samples:
        for sp in splits.values():
            sp.samples = sp.samples[:max_samples]
    det = None
    name = _no_detector(detector)
    if name and any(x.detect for sp in splits.values() for x in sp.samples):
        from ..detect import resolve_detector

        det = resolve_detector(name)
    if precision is not None:
        check_precision(precision)

    def hook(model: torch.nn.Module, step: int) -> dict[str, float]:
        dev = device or next(model.parameters()).device
        protocol = _default_protocol(
            model.video_len,
            model.image_size,
            name if det else None,
            precision or default_precision(dev),
            track=track,
        )
        feats = {
            n: extract_features(
                model,
                sp.samples,
                protocol,
                batch_size=batch_size,
                device=dev,
                detector=det,
                num_workers=num_workers,
                desc=f"eval {dataset}/{n} @ {step}",
            )
            for n, sp in splits.items()
        }
        metrics, _, _ = run_probes(dataset, splits, feats, solver=solver, device=device, macro=macro)
        return {f"{dataset}/{s}/{m}": float(v) for s, ms in metrics.items() for m, v in ms.items()}

    return hook
