"""EmotionCLIP: visual emotion representations learned from verbal and nonverbal communication.

Zhang, Pan & Wang, CVPR 2023. The public API::

    model = emotionclip.load_model("emotionclip-release")      # released weights (a local copy)
    feats = model.encode_video(video, video_mask)                  # [B, T, 3, 224, 224] -> [B, 512]
    model = emotionclip.create_model("ViT-B-32", pretrained="laion2b_e16")   # to train your own

Names are imported on first use, so ``import emotionclip`` (and the CLI's ``--help``) stays fast:
open_clip and torchvision load when a model is built.
"""

from __future__ import annotations

from emotionclip._lazy import lazy_exports
from emotionclip.constants import SENTIMENT_CLASSES

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    **dict.fromkeys(
        (
            "CheckpointError",
            "create_model",
            "create_model_and_transforms",
            "get_backbone_config",
            "infer_config",
            "list_backbones",
            "load_model",
            "read_clip_state_dict",
            "save_model",
            "save_pretrained",
        ),
        "emotionclip.factory",
    ),
    "list_pretrained": "emotionclip.pretrained",
    **dict.fromkeys(("ClipLoss", "SentimentGuidedClipLoss"), "emotionclip.loss"),
    **dict.fromkeys(("EmotionCLIP", "EmotionCLIPConfig"), "emotionclip.model"),
    "tokenize": "emotionclip.tokenizer",
    **dict.fromkeys(("Runner", "as_runner", "load_runner"), "emotionclip.runner"),
    **dict.fromkeys(
        (
            "IMAGENET_MEAN",
            "IMAGENET_STD",
            "FrameTransform",
            "PreprocessConfig",
            "boxes_to_mask",
            "boxes_to_masks",
            "image_transform",
            "model_transform",
            "video_transform",
        ),
        "emotionclip.transform",
    ),
    **dict.fromkeys(("analyze_video", "embed_image", "embed_video"), "emotionclip.analyze"),
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["SENTIMENT_CLASSES", *_EXPORTS]
