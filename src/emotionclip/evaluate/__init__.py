"""Linear-probe and zero-shot evaluation on the paper's benchmarks, from their official files."""

from .api import BENCHMARKS, evaluate, make_probe_evaluator, run_probes
from .datasets import DATASETS, Sample, Split, load_split
from .features import Features, Protocol, cached_features, checkpoint_hash, extract_features
from .probe import LinearProbe, ProbeHead, fit_sklearn, fit_torch
from .zeroshot import DEFAULT_TEMPLATES, VOCABULARIES, zero_shot, zero_shot_classifier, zero_shot_scores

__all__ = [
    "BENCHMARKS", "DATASETS", "DEFAULT_TEMPLATES", "VOCABULARIES", "Features", "LinearProbe", "ProbeHead",
    "Protocol", "Sample", "Split", "cached_features", "checkpoint_hash", "evaluate", "extract_features",
    "fit_sklearn", "fit_torch", "load_split", "make_probe_evaluator", "run_probes", "zero_shot",
    "zero_shot_classifier", "zero_shot_scores",
]  # fmt: skip
