"""The human-readable side of an evaluation: a Markdown table and one plot per probe task."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._io import atomic_write
from . import metrics as M


def _row(name: str, values: dict[str, float], columns: list[str]) -> str:
    # percentages with 2 decimals; MSE / correlations (below 1) with 4
    cells = [
        "–" if c not in values else f"{values[c]:.2f}" if abs(values[c]) >= 1 else f"{values[c]:.4f}"
        for c in columns
    ]
    return f"| {name} | " + " | ".join(cells) + " |"


def write_table(path: Path, result: dict) -> str:
    metrics = result["metrics"]
    columns = list(dict.fromkeys(m for ms in metrics.values() for m in ms))
    lines = [
        f"# Linear probe: {result['dataset']}",
        "",
        f"checkpoint `{result['checkpoint']}` (sha256 {result['checkpoint_sha256'][:12]}), "
        f"solver `{result['solver']}`, {result['protocol']['num_frames']} frames per clip",
        "",
        "| split | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 1) + "|",
    ]
    lines += [_row(s, ms, columns) for s, ms in metrics.items()]
    lines += [_row(f"{s} (sklearn)", ms, columns) for s, ms in result.get("metrics_sklearn", {}).items()]
    lines += ["", "| split | samples | used | skipped (loader) | failed (decode) |", "|---|---|---|---|---|"]
    lines += [
        f"| {s} | {c['samples']} | {c['used']} | {c['skipped']} | {c['failed']} |"
        for s, c in result["counts"].items()
    ]
    if "max_abs_difference" in result:
        lines += ["", f"largest |torch - sklearn| metric difference: {result['max_abs_difference']:.3f}"]
    text = "\n".join(lines) + "\n"
    atomic_write(path, text)
    return text


def write_plots(out_dir: Path, dataset: str, splits, heads, predictions) -> list[str]:
    """Per-class AP (multi-label), confusion matrix (multi-class) or true-vs-predicted (regression)
    on the first evaluation split of each task."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for label, by_split in predictions.items():
        if not by_split:
            continue
        split, (y, p) = next(iter(by_split.items()))
        head = heads[label]
        names = head.classes
        if head.kind == "ovr":
            ap = M.average_precision(y, p)
            fig, ax = plt.subplots(figsize=(6, 0.25 * len(names) + 1))
            ax.barh(np.arange(len(names)), np.nan_to_num(ap) * 100)
            ax.set_yticks(np.arange(len(names)), names, fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel(f"average precision (%) on {split}")
        elif head.kind == "multinomial":
            k = len(names)
            cm = np.bincount(y.astype(int) * k + p.argmax(1), minlength=k * k).reshape(k, k)
            fig, ax = plt.subplots(figsize=(5, 4.5))
            ax.imshow(cm / np.maximum(cm.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
            ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=7)
            ax.set_yticks(range(k), names, fontsize=7)
            ax.set_xlabel("predicted")
            ax.set_ylabel(f"true ({split}; rows normalised)")
        else:
            fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.2), squeeze=False)
            for j, (ax, n) in enumerate(zip(axes[0], names, strict=True)):
                ax.scatter(y[:, j], p[:, j], s=4, alpha=0.5)
                ax.set_xlabel(f"true {n}")
                ax.set_ylabel(f"predicted ({split})")
        fig.suptitle(f"{dataset}: {label}", fontsize=9)
        fig.tight_layout()
        path = out_dir / f"{dataset}_{label}.png"
        tmp = path.with_name(f".{path.stem}.tmp.png")
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        written.append(str(path))
    return written
