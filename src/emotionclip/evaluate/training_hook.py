"""An evaluation hook for training: the probes fitted on the model as it is now, every few steps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..precision import check_precision, default_precision
from .features import extract_features
from .probing import run_probes
from .run import benchmark_splits, default_protocol, no_detector


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
    splits = benchmark_splits(dataset, root)
    if max_samples:
        for sp in splits.values():
            sp.samples = sp.samples[:max_samples]
    det = None
    name = no_detector(detector)
    if name and any(x.detect for sp in splits.values() for x in sp.samples):
        from ..detect import resolve_detector

        det = resolve_detector(name, device=device)
    if precision is not None:
        check_precision(precision)

    def hook(model: torch.nn.Module, step: int) -> dict[str, float]:
        dev = device or next(model.parameters()).device
        protocol = default_protocol(
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
