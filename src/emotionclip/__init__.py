"""EmotionCLIP: visual emotion representations learned from verbal and nonverbal communication.

Zhang, Pan & Wang, CVPR 2023. The public API::

    model = emotionclip.load_model("emotionclip.pt")            # released weights
    feats = model.encode_video(video, video_mask)                  # [B, T, 3, 224, 224] -> [B, 512]
    model = emotionclip.create_model("ViT-B-32", pretrained="laion2b_e16")   # to train your own
"""

from emotionclip.factory import (
    CheckpointError,
    create_model,
    create_model_and_transforms,
    get_backbone_config,
    infer_config,
    list_backbones,
    load_model,
    read_clip_state_dict,
    save_model,
)
from emotionclip.loss import ClipLoss, SentimentGuidedClipLoss
from emotionclip.model import EmotionCLIP, EmotionCLIPConfig
from emotionclip.tokenizer import tokenize
from emotionclip.transform import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FrameTransform,
    boxes_to_mask,
    boxes_to_masks,
    image_transform,
    video_transform,
)

__version__ = "0.1.0"

# applying a model to videos pulls in pandas/matplotlib: imported on first use
_ANALYZE_API = ("analyze_video", "embed_image", "embed_video")


def __getattr__(name: str):
    if name in _ANALYZE_API:
        from emotionclip import analyze

        return getattr(analyze, name)
    raise AttributeError(f"module 'emotionclip' has no attribute {name!r}")


# order of the 7 sentiment classes (the paper's j-hartmann/emotion-english-distilroberta-base)
SENTIMENT_CLASSES = ("anger", "disgust", "fear", "joy", "neutral", "sadness", "surprise")

__all__ = [
    "SENTIMENT_CLASSES",
    "CheckpointError",
    "ClipLoss",
    "EmotionCLIP",
    "EmotionCLIPConfig",
    "FrameTransform",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SentimentGuidedClipLoss",
    "analyze_video",
    "boxes_to_mask",
    "boxes_to_masks",
    "create_model",
    "create_model_and_transforms",
    "embed_image",
    "embed_video",
    "get_backbone_config",
    "image_transform",
    "infer_config",
    "list_backbones",
    "load_model",
    "read_clip_state_dict",
    "save_model",
    "tokenize",
    "video_transform",
]
