"""Fitting the probes on the features and writing what an evaluation gives: heads, plots, table, JSON."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

from .._io import atomic_write
from .datasets import Split
from .features import Features, Protocol
from .probing import run_probes

logger = logging.getLogger(__name__)


def probe_and_write(
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
    write_outputs(out_dir, result, splits, feats, heads, predictions)
    return result


def write_outputs(out_dir: Path, result: dict, splits, feats, heads, predictions) -> None:
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
