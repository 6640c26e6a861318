"""Apply a model to videos: embeddings per window, emotions over time, reports, batches."""

from emotionclip._lazy import lazy_exports

_EXPORTS = {
    "Analysis": ".analyze",
    "EmotionScorer": ".analyze",
    "EmotionTable": ".table",
    "analyze_video": ".analyze",
    "probe_scorer": ".analyze",
    "run_analysis": ".analyze",
    "zero_shot_scorer": ".analyze",
    "VideoEmbedding": ".embed",
    "embed_image": ".embed",
    "embed_video": ".embed",
    "plan_windows": ".windows",
    "window_starts": ".windows",
    "analyze_paths": ".batch",
    "embed_paths": ".batch",
    "write_index": ".report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
