"""Pre-training EmotionCLIP: `train(config)` and the `emotionclip train` command."""

from emotionclip._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": ".config",
    "Evaluator": ".loop",
    "TrainResult": ".loop",
    "train": ".loop",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
