"""Apply a model to videos: embeddings per window, emotions over time, reports (issue #6)."""

from .analyze import Analysis, EmotionScorer, analyze_video, probe_scorer, run_analysis, zero_shot_scorer
from .embed import VideoEmbedding, embed_image, embed_video
from .windows import plan_windows, window_starts

__all__ = [
    "Analysis",
    "EmotionScorer",
    "VideoEmbedding",
    "analyze_video",
    "embed_image",
    "embed_video",
    "plan_windows",
    "probe_scorer",
    "run_analysis",
    "window_starts",
    "zero_shot_scorer",
]
