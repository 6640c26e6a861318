"""The paper's linear-probe protocol per benchmark, as data: splits, tasks, probe kind, C, metrics.

Light on purpose (no torch): the CLI reads the names for ``--dataset``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    label: str  # key in Sample.labels
    kind: str  # probe kind (ovr / multinomial / ridge)
    c: float  # C of LogisticRegression, alpha of Ridge
    metrics: tuple[str, ...]
    # Savitzky-Golay over the concatenated predictions of an evaluation split, as the release does
    # (LIRIS-ACCEDE); each split also gets a "<split> (per-movie smoothing)" row, filtered per movie
    smooth: bool = False


@dataclass(frozen=True)
class Benchmark:
    train: str
    evals: tuple[str, ...]
    tasks: tuple[Task, ...]


BENCHMARKS = {
    "bold": Benchmark(
        "train",
        ("val",),
        (Task("categories", "ovr", 3.16, ("mAP", "AUC")), Task("vad", "ridge", 1.0, ("R2",))),
    ),
    "moviegraphs": Benchmark("train", ("val", "test"), (Task("categories", "ovr", 10.0, ("top1_hit",)),)),
    "meld": Benchmark(
        "train", ("dev", "test"), (Task("emotion", "multinomial", 8.0, ("weighted_F1", "accuracy")),)
    ),
    "emotic": Benchmark("train", ("val", "test"), (Task("categories", "ovr", 2.5, ("mAP", "AUC")),)),
    "liris-accede": Benchmark("train", ("test",), (Task("va", "ridge", 1.0, ("MSE", "PCC"), smooth=True),)),
}
