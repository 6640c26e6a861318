"""Inference backends behind one interface: torch (fp32 / bf16 / fp16 autocast), ONNX Runtime and
OpenVINO (fp32 / int8, OpenVINO also bf16), and ``auto``, which measures them once per machine and model.

Every backend returns a :class:`emotionclip.runner.Runner`: EmotionCLIP's ``encode_video`` /
``encode_image`` / ``encode_text`` / ``visual_head``, its sizes (``video_len``, ``image_size``,
``embed_dim``) and ``logit_scale``, plus ``device``, ``precision`` and ``backend`` naming what runs
(e.g. ``"onnxruntime-int8"``). Stages build one with :func:`emotionclip.load_runner`.
"""

from emotionclip._lazy import lazy_exports

_EXPORTS = {
    "BACKENDS": ".runtimes",
    "InferenceModel": ".runtimes",
    "TorchModel": ".runtimes",
    "available_backends": ".runtimes",
    "load_backend": ".load",
    "choose_backend": ".auto",
    "cache_dir": ".cache",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)

# the CLI's choices, without importing any runtime
BACKEND_NAMES = ("auto", "torch", "onnxruntime", "openvino")
