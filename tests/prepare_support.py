"""Small real components for the prepare tests (not mocks: they do their job, just simply).

They live in an importable module so that worker processes (spawned) can unpickle them.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import numpy as np

from emotionclip.constants import SENTIMENT_CLASSES
from emotionclip.sentiment import SentimentScorer

LEXICON = {
    "anger": {"angry", "hate", "furious", "stolen", "bad"},
    "disgust": {"gross", "disgusting", "yuck"},
    "fear": {"afraid", "scared", "scare", "forget"},
    "joy": {"happy", "love", "great", "hearty", "remarkable"},
    "sadness": {"sad", "cry", "lost"},
    "surprise": {"wow", "what", "extraordinary"},
}


class KeywordScorer(SentimentScorer):
    """Counts emotion words; the neutral logit is a constant, so a sentence with no cue word is neutral."""

    name = "keywords"

    def score(self, texts: list[str]) -> np.ndarray:
        logits = np.zeros((len(texts), len(SENTIMENT_CLASSES)), np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z']+", text.lower())
            for c, cls in enumerate(SENTIMENT_CLASSES):
                logits[i, c] = 3.0 * sum(w in LEXICON.get(cls, ()) for w in words)
        logits[:, SENTIMENT_CLASSES.index("neutral")] = 1.5
        return logits


def write_boxes_json(path: Path, videos: dict[str, tuple[int, int, float, list | None]]) -> Path:
    """Boxes for the ``json:`` detector: ``{video name: (width, height, duration, box or None)}``;
    the same box on every frame listed every 1/16 s (within tolerance of any 8 fps instant)."""
    doc = {"format": "emotionclip-boxes/1", "videos": {}}
    for name, (w, h, duration, box) in videos.items():
        frames = [{"t": k / 16, "boxes": [box] if box else []} for k in range(int(duration * 16) + 2)]
        doc["videos"][name] = {"width": w, "height": h, "frames": frames}
    path.write_text(json.dumps(doc))
    return path


class CrashingDetector:
    """The json: detector, except that the process dies (like a segfaulting native library) on one video."""

    name = "crashing"

    def __init__(self, boxes_json: str, crash_on: str):
        from emotionclip.detect.json_boxes import JsonBoxDetector

        self.inner = JsonBoxDetector(boxes_json)
        self.crash_on = crash_on

    def detect(self, frames, *, video=None, times=None):
        if self.crash_on in str(video):
            os.kill(os.getpid(), signal.SIGKILL)
        return self.inner.detect(frames, video=video, times=times)


class SlowDetector:
    """The json: detector, taking ``delay`` seconds per clip (a slow real detector, for lock and kill tests)."""

    name = "slow"

    def __init__(self, boxes_json: str, delay: float):
        from emotionclip.detect.json_boxes import JsonBoxDetector

        self.inner = JsonBoxDetector(boxes_json)
        self.delay = delay

    def detect(self, frames, *, video=None, times=None):
        import time

        time.sleep(self.delay)
        return self.inner.detect(frames, video=video, times=times)
