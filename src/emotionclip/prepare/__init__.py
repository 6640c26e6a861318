"""Prepare: a user's videos and subtitles → a streamable EmotionCLIP training corpus.

``prepare(input, out_dir, PrepareConfig(...))`` writes WebDataset shards; ``make_train_loader(urls,
...)`` reads them back as training batches. Person detectors live in ``detect``, sentence sentiment
scorers in ``sentiment``, subtitle parsing and sentence regrouping in ``subtitles``.
"""

from emotionclip.prepare.clips import ClipFilter
from emotionclip.prepare.dataset import make_train_loader
from emotionclip.prepare.detect import PersonDetector, get_detector
from emotionclip.prepare.discover import VideoItem, discover
from emotionclip.prepare.pipeline import PrepareConfig, prepare
from emotionclip.prepare.sentiment import SentimentScorer, get_sentiment_scorer
from emotionclip.prepare.shards import merge_manifests
from emotionclip.prepare.subtitles import (
    Cue,
    RuleSegmenter,
    Sentence,
    SubtitleError,
    cues_to_sentences,
    load_subtitles,
)

__all__ = [
    "ClipFilter",
    "Cue",
    "PersonDetector",
    "PrepareConfig",
    "RuleSegmenter",
    "Sentence",
    "SentimentScorer",
    "SubtitleError",
    "VideoItem",
    "cues_to_sentences",
    "discover",
    "get_detector",
    "get_sentiment_scorer",
    "load_subtitles",
    "make_train_loader",
    "merge_manifests",
    "prepare",
]
