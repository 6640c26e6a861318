"""Pre-training EmotionCLIP: `train(config)` and the `emotionclip train` command."""

from emotionclip.train.config import TrainConfig
from emotionclip.train.loop import Evaluator, TrainResult, train

__all__ = ["Evaluator", "TrainConfig", "TrainResult", "train"]
