"""Linear-probe and zero-shot evaluation on the paper's benchmarks, from their official files."""

from emotionclip._lazy import lazy_exports

_EXPORTS = {
    "evaluate": ".run",
    "make_probe_evaluator": ".training_hook",
    "run_probes": ".probing",
    "BENCHMARKS": ".benchmarks",
    "DATASETS": ".datasets",
    "Sample": ".datasets",
    "Split": ".datasets",
    "load_split": ".datasets",
    "Features": ".features",
    "Protocol": ".features",
    "cached_features": ".features",
    "checkpoint_hash": ".features",
    "extract_features": ".features",
    "LinearProbe": ".probe",
    "fit_sklearn": ".probe",
    "fit_torch": ".probe",
    "ProbeHead": "emotionclip.heads",
    "DEFAULT_TEMPLATES": "emotionclip.heads",
    "VOCABULARIES": "emotionclip.heads",
    "zero_shot_classifier": "emotionclip.heads",
    "zero_shot_scores": "emotionclip.heads",
    "zero_shot": ".zeroshot",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
