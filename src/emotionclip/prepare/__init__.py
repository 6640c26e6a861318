"""Prepare: a user's videos and subtitles → a streamable EmotionCLIP training corpus.

``prepare(input, out_dir, PrepareConfig(...))`` writes WebDataset shards (format and reader in
:mod:`emotionclip.shards`). Person detectors live in :mod:`emotionclip.detect`, sentence sentiment
scorers in :mod:`emotionclip.sentiment`; subtitle parsing and sentence regrouping here in ``subtitles``.
"""

from emotionclip._lazy import lazy_exports

_EXPORTS = {
    "ClipFilter": ".clips",
    "VideoItem": ".discovery",
    "discover": ".discovery",
    "PrepareConfig": ".pipeline",
    "VideoRecord": ".pipeline",
    "merge": ".pipeline",
    "prepare": ".pipeline",
    "PunctuationRestorer": ".punctuation",
    "Cue": ".subtitles",
    "ReleaseSegmenter": ".subtitles",
    "RuleSegmenter": ".subtitles",
    "Sentence": ".subtitles",
    "SubtitleError": ".subtitles",
    "cues_to_sentences": ".subtitles",
    "load_subtitles": ".subtitles",
    "merge_manifests": "emotionclip.shards.writer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
