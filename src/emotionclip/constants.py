"""Values every stage shares: class orders, thresholds, where shipped assets live."""

from __future__ import annotations

from pathlib import Path

# order of the 7 sentiment classes (the paper's j-hartmann/emotion-english-distilroberta-base)
SENTIMENT_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

# Emotic's 26 discrete categories, in the dataset's order (also a zero-shot vocabulary)
EMOTIC_CATEGORIES = (
    "affection",
    "anger",
    "annoyance",
    "anticipation",
    "aversion",
    "confidence",
    "disapproval",
    "disconnection",
    "disquietment",
    "doubt/confusion",
    "embarrassment",
    "engagement",
    "esteem",
    "excitement",
    "fatigue",
    "fear",
    "happiness",
    "pain",
    "peace",
    "pleasure",
    "sadness",
    "sensitivity",
    "suffering",
    "surprise",
    "sympathy",
    "yearning",
)

# a detected box counts as a person when its score is above this (the release: YOLOv7, score > 0.5)
BOX_SCORE_THRESHOLD = 0.5
# analyze / embed detect people on every other frame of the window grid (4 fps for 2 s windows of 8
# frames: detections 0.5 s apart) and the frame between takes the boxes of the one before: on a
# 2-core CPU beside a fast encoder that halves the detector's share of the time (README, Benchmarks).
DETECT_EVERY = 2

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS = PACKAGE_DIR / "assets"
SAMPLE_MEDIA = PACKAGE_DIR / "sample_media"
