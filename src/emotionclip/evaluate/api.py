"""``evaluate(checkpoint, dataset, root)``: the paper's linear-probe protocol on one benchmark.

Frozen features (cached) -> probe fitted on the training split -> metrics on the evaluation
splits -> ``<out>/<dataset>_metrics.json`` + ``.md`` table + plots + the fitted probe heads.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from scipy.signal import savgol_filter

from .._io import atomic_write
from ..transform import PreprocessConfig
from . import metrics as M
from .benchmarks import BENCHMARKS, Task
from .datasets import Split, load_split
from .features import (
    Features,
    Protocol,
    cached_features,
    checkpoint_hash,
    extract_features,
)
from .probe import LinearProbe, ProbeHead

logger = logging.getLogger(__name__)


SAVGOL_WINDOW, SAVGOL_ORDER = 100, 3  # the release's smoothing of LIRIS-ACCEDE predictions


def smooth_per_group(pred: np.ndarray, groups: list[str]) -> np.ndarray:
    """Savitzky-Golay (window 100, order 3) along each group's samples (in their order)."""
    out = pred.copy()
    groups_arr = np.asarray(groups)
    for g in dict.fromkeys(groups):
        idx = np.flatnonzero(groups_arr == g)
        window = min(SAVGOL_WINDOW, len(idx))
        if window > SAVGOL_ORDER:
            out[idx] = savgol_filter(pred[idx], window_length=window, polyorder=SAVGOL_ORDER, axis=0)
    return out


def score(task: Task, y: np.ndarray, scores: np.ndarray, names: list[str]) -> dict[str, float]:
    """The task's metrics; classification ones in percent as the paper reports them."""
    out: dict[str, float] = {}
    for m in task.metrics:
        if m == "mAP":
            out[m] = 100 * M.macro_map(y, scores)
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
    kept = {s.key for s in split.samples}
    rows = [i for i, k in enumerate(feats.keys) if k in kept]
    keys = [feats.keys[i] for i in rows]
    groups = {s.key: s.group for s in split.samples}
    return feats.features[rows], split.labels(label, keys), [groups[k] for k in keys]


def run_probes(
    dataset: str,
    splits: dict[str, Split],
    feats: dict[str, Features],
    solver: str = "torch",
    device: str | None = None,
) -> tuple[dict[str, dict[str, float]], dict[str, ProbeHead], dict[str, dict]]:
    """Fit each task's probe on the training split; metrics per evaluation split.

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
                p = smooth_per_group(p, groups)
            results[s].update(score(task, ye, p, names))
            predictions[task.label][s] = (ye, p)
    return results, heads, predictions


def _default_protocol(model_frames: int, image_size: int, detector: str | None) -> Protocol:
    return Protocol(
        num_frames=model_frames,
        image_size=image_size,
        video_resize=PreprocessConfig.for_crop(image_size).resize,
        image_resize=image_size,
        detector=detector,
    )


def _model_shape(get_model: Callable[[], torch.nn.Module], ckpt_sha: str, cache_dir: Path) -> tuple[int, int]:
    """``(video_len, image_size)`` of a checkpoint, remembered beside the feature cache so that a
    fully cached run does not load the model at all."""
    memo = cache_dir / f"model-{ckpt_sha[:16]}.json"
    if memo.is_file():
        shape = json.loads(memo.read_text())
        return int(shape["video_len"]), int(shape["image_size"])
    model = get_model()
    atomic_write(memo, json.dumps({"video_len": model.video_len, "image_size": model.image_size}))
    return model.video_len, model.image_size


def evaluate(
    checkpoint: str | Path,
    dataset: str,
    root: str | Path,
    *,
    out_dir: str | Path = "eval_results",
    cache_dir: str | Path | None = None,
    solver: str = "torch",
    compare_sklearn: bool = False,
    detector: str | None = None,
    device: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
    num_frames: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Run the benchmark's linear-probe protocol and write ``<out_dir>/<dataset>_metrics.{json,md}``.

    ``solver``: ``"torch"`` (fast L-BFGS) or ``"sklearn"`` (the release's reference);
    ``compare_sklearn`` also fits the reference and reports both. ``detector``: person-detector name
    for the benchmarks without boxes (MELD, MovieGraphs, LIRIS-ACCEDE), e.g. ``default`` or
    ``json:PATH``. Returns the dict that is written as JSON.
    """
    from ..factory import load_model

    if dataset not in BENCHMARKS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(BENCHMARKS)}")
    out_dir = Path(out_dir)
    json_path = out_dir / f"{dataset}_metrics.json"
    if json_path.exists() and not overwrite:
        raise FileExistsError(f"{json_path}: already exists (use overwrite=True / --overwrite to replace it)")
    cache_dir = Path(cache_dir) if cache_dir is not None else out_dir / "feature_cache"
    bench = BENCHMARKS[dataset]
    started = time.time()
    splits = {s: load_split(dataset, root, s) for s in (bench.train, *bench.evals)}
    needs_detector = any(x.detect for sp in splits.values() for x in sp.samples)
    det_name = detector if needs_detector else None
    ckpt_sha = checkpoint_hash(checkpoint)

    model_holder: dict[str, torch.nn.Module] = {}

    def get_model() -> torch.nn.Module:
        if "m" not in model_holder:
            dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
            model_holder["m"] = load_model(checkpoint, device=dev)
        return model_holder["m"]

    video_len, size = _model_shape(get_model, ckpt_sha, cache_dir)
    protocol = _default_protocol(num_frames or video_len, size, det_name)
    det = None
    if det_name:
        from ..detect import get_detector

        det = get_detector(det_name)
    feats = {
        name: cached_features(
            sp,
            protocol,
            cache_dir,
            checkpoint,
            get_model,
            ckpt_sha=ckpt_sha,
            detector=det,
            batch_size=batch_size,
            num_workers=num_workers,
        )
        for name, sp in splits.items()
    }
    extract_s = time.time() - started
    t0 = time.time()
    metrics, heads, predictions = run_probes(dataset, splits, feats, solver=solver, device=device)
    probe_s = time.time() - t0
    result = {
        "dataset": dataset,
        "root": str(root),
        "checkpoint": str(checkpoint),
        "checkpoint_sha256": ckpt_sha,
        "protocol": asdict(protocol),
        "solver": solver,
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
        "seconds": {"features": round(extract_s, 2), "probe": round(probe_s, 3)},
    }
    if compare_sklearn and solver != "sklearn":
        t0 = time.time()
        ref, _, _ = run_probes(dataset, splits, feats, solver="sklearn")
        result["seconds"]["probe_sklearn"] = round(time.time() - t0, 3)
        result["metrics_sklearn"] = ref
        result["max_abs_difference"] = max(
            (abs(v - ref[s][m]) for s in metrics for m, v in metrics[s].items()), default=0.0
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    for label, head in heads.items():
        head.meta["checkpoint_sha256"] = ckpt_sha
        result.setdefault("probe_heads", {})[label] = str(
            head.save(out_dir / f"{dataset}_probe_{label}", overwrite=True)
        )
    from .report import write_plots, write_table

    result["plots"] = write_plots(out_dir, dataset, splits, heads, predictions)
    result["skipped"] = {n: sp.skipped for n, sp in splits.items() if sp.skipped}
    result["failed"] = {n: f.failed for n, f in feats.items() if f.failed}
    table = write_table(out_dir / f"{dataset}_metrics.md", result)
    atomic_write(json_path, json.dumps(result, indent=2))
    logger.info("wrote %s and %s\n%s", json_path, out_dir / f"{dataset}_metrics.md", table)
    return result


def make_probe_evaluator(
    dataset: str,
    root: str | Path,
    *,
    max_samples: int | None = None,
    solver: str = "torch",
    detector: str | None = None,
    device: str | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
) -> Callable[[torch.nn.Module, int], dict[str, float]]:
    """An evaluation hook for training: ``hook(model, step) -> {"<dataset>/<split>/<metric>": value}``.

    Splits are loaded once (the first ``max_samples`` of each, if given); each call extracts
    features from the model as it is now (no cache, the weights change) and fits the probes.
    """
    if dataset not in BENCHMARKS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(BENCHMARKS)}")
    bench = BENCHMARKS[dataset]
    splits = {s: load_split(dataset, root, s) for s in (bench.train, *bench.evals)}
    if max_samples:
        for sp in splits.values():
            sp.samples = sp.samples[:max_samples]
    det = None
    if detector and any(x.detect for sp in splits.values() for x in sp.samples):
        from ..detect import get_detector

        det = get_detector(detector)

    def hook(model: torch.nn.Module, step: int) -> dict[str, float]:
        size = model.image_size
        protocol = _default_protocol(model.video_len, size, det.name if det else None)
        dev = device or next(model.parameters()).device
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
        metrics, _, _ = run_probes(dataset, splits, feats, solver=solver, device=device)
        return {f"{dataset}/{s}/{m}": float(v) for s, ms in metrics.items() for m, v in ms.items()}

    return hook
