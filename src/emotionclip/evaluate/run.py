"""``evaluate(checkpoint, dataset, root)``: the paper's linear-probe protocol on one benchmark.

Frozen features (cached; the runner built once, only on a cache miss) -> probe fitted on the
training split -> metrics on the evaluation splits -> ``<out>/<dataset>_metrics.json`` + ``.md``
table + plots + the fitted probe heads (:mod:`.outputs`). A job split into parts
(:mod:`emotionclip.jobs`) completes in :mod:`.completion`.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from .._io import atomic_write, claim_output_dir
from ..jobs import Part, current_part, parts_lock, rank_device
from ..precision import autocast, check_precision, default_precision
from ..runner import Runner, load_runner
from ..transform import PreprocessConfig
from . import metrics as M
from .benchmarks import BENCHMARKS
from .completion import finish_part
from .datasets import Split, load_split
from .features import Features, Protocol, cached_features, checkpoint_hash
from .outputs import probe_and_write


def default_protocol(
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


def no_detector(name: str | None) -> str | None:
    return None if not name or name.lower() == "none" else name


def benchmark_splits(dataset: str, root: str | Path) -> dict[str, Split]:
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
        splits = benchmark_splits(dataset, root)
        cache = Path(cache_dir) if cache_dir is not None else out_dir / "feature_cache"
        started = time.time()
        protocol, feats, ckpt_sha = protocol_features(
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
            probe_and_write,
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
            return finish_part(this, feats, splits, protocol, cache, checkpoint, ckpt_sha, json_path, probe)


def protocol_features(
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
    det_name = no_detector(detector) if needs_detector else None
    ckpt_sha = checkpoint_hash(checkpoint)
    if backend in (None, "torch"):
        get_runner = functools.cache(functools.partial(load_runner, checkpoint, device, precision, "torch"))
        backend = "torch"
    else:  # the backend (auto's choice) keys the cache: built now
        runner, precision, backend = build_runner(checkpoint, device, backend, precision)
        get_runner = functools.partial(lambda r: r, runner)
    video_len, size = _model_shape(get_runner, ckpt_sha, cache_dir)
    protocol = default_protocol(num_frames or video_len, size, det_name, precision, backend, track=track)
    det = None
    if det_name:
        from ..detect import resolve_detector

        det = resolve_detector(det_name, device=device)  # the ONNX detectors use the GPU too
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
