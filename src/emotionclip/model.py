"""EmotionCLIP (Zhang, Pan & Wang, CVPR 2023): subject-aware CLIP frames + temporal fusion.

The module tree mirrors the released checkpoint so that its state dict loads strictly:
``backbone`` is an open_clip ``CLIP`` (vision and text towers, used unmodified), ``visual_head``
fuses the T frame features. There is one temperature, as in the release: ``logit_scale`` IS the
backbone's parameter (the state dict stores it under both keys), so a model initialised from CLIP
weights starts at their scale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from emotionclip.shapes import check_video
from emotionclip.tokenizer import check_tokens
from emotionclip.transform import PreprocessConfig

_LEGACY_KEYS = ("extra",)  # written by 0.1 config files, never read
# open_clip has no public hook for an extra token, so the frame encoder calls these two private
# steps of its VisionTransformer; tests/test_model_parity.py checks that they still behave
_OPEN_CLIP_PRIVATE = ("_embeds", "_pool")
OPEN_CLIP_TESTED = ">=2.32,<3.4"  # as in pyproject.toml


@dataclass
class EmotionCLIPConfig:
    """Everything needed to rebuild the architecture and feed it (weights not included)."""

    backbone: dict[str, Any]  # open_clip CLIP config: embed_dim, vision_cfg, text_cfg
    quick_gelu: bool = False
    temporal_fusion: str = "transformer"
    video_len: int = 8
    head_layers: int = 6
    head_heads: int = 8
    head_ffn: int = 2048
    head_dropout: float = 0.1
    backbone_name: str | None = None  # informative: the open_clip model name it came from
    # how frames are prepared; None = the release's recipe at the vision tower's input size
    preprocess: PreprocessConfig | None = None

    def __post_init__(self):
        if isinstance(self.preprocess, dict):
            self.preprocess = PreprocessConfig.from_dict(self.preprocess)
        elif self.preprocess is None:  # 224 is open_clip's default input size
            self.preprocess = PreprocessConfig.for_crop(
                int(self.backbone["vision_cfg"].get("image_size", 224))
            )
        elif not isinstance(self.preprocess, PreprocessConfig):
            raise TypeError(
                f"preprocess must be a PreprocessConfig or a dict, got {type(self.preprocess).__name__}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "preprocess": self.preprocess.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EmotionCLIPConfig:
        d = {k: v for k, v in d.items() if k not in _LEGACY_KEYS}
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown EmotionCLIP config keys: {sorted(unknown)} (valid: {sorted(known)})")
        return cls(**d)


class TransformerFusion(nn.Module):
    """Temporal transformer of the release: ``enc(x + pos) + x``, then the mean over frames."""

    def __init__(self, dim: int, video_len: int, layers: int, heads: int, ffn: int, dropout: float):
        super().__init__()
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="gelu", batch_first=True)
        self.fusion_layer = nn.TransformerEncoder(
            layer, layers, norm=nn.LayerNorm(dim), enable_nested_tensor=False
        )
        self.frame_position_embedding = nn.Embedding(video_len, dim)
        # persistent: the released checkpoint stores it
        self.register_buffer("position_ids", torch.arange(video_len), persistent=True)

    def check_length(self, t: int) -> None:
        if t > len(self.position_ids):
            raise ValueError(
                f"clip has {t} frames but the model's frame-position table holds {len(self.position_ids)}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.frame_position_embedding(self.position_ids[: x.shape[1]])
        return (self.fusion_layer(x + pos) + x).mean(dim=1)


class MeanFusion(nn.Module):
    def check_length(self, t: int) -> None:
        pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class Conv1dFusion(nn.Module):
    """Depthwise temporal convolution (kernel 3, no padding, no bias), then the mean over time."""

    def __init__(self, dim: int):
        super().__init__()
        self.fusion_layer = nn.Conv1d(dim, dim, kernel_size=3, groups=dim, bias=False)

    def check_length(self, t: int) -> None:
        if t < 3:
            raise ValueError(f"conv1d temporal fusion needs at least 3 frames, got {t}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion_layer(x.transpose(1, 2)).mean(dim=2)


# name -> builder(config, feature dim); a head maps [B, T, D] frame features to [B, D] and has
# check_length(T) to refuse clip lengths it cannot take
TEMPORAL_HEADS: dict[str, Callable[[EmotionCLIPConfig, int], nn.Module]] = {
    "transformer": lambda cfg, dim: TransformerFusion(
        dim, cfg.video_len, cfg.head_layers, cfg.head_heads, cfg.head_ffn, cfg.head_dropout
    ),
    "mean": lambda cfg, dim: MeanFusion(),
    "conv1d": lambda cfg, dim: Conv1dFusion(dim),
}


def build_temporal_head(cfg: EmotionCLIPConfig, dim: int) -> nn.Module:
    builder = TEMPORAL_HEADS.get(cfg.temporal_fusion)
    if builder is None:
        raise ValueError(
            f"unknown temporal_fusion {cfg.temporal_fusion!r}; choose one of {sorted(TEMPORAL_HEADS)}"
        )
    return builder(cfg, dim)


def _as_float_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # integer masks may use any non-zero value for "subject" (e.g. 255); float masks are taken as given
    return mask.to(dtype) if mask.is_floating_point() else (mask != 0).to(dtype)


def _one_logit_scale(state_dict, prefix, *args) -> None:
    # Both keys load into the one parameter, the backbone's last. Files written before the two were
    # tied hold a trained ``logit_scale`` beside CLIP's stale copy: the EmotionCLIP key wins.
    own, clip = prefix + "logit_scale", prefix + "backbone.logit_scale"
    if own in state_dict:
        state_dict[clip] = state_dict[own]
    elif clip in state_dict:
        state_dict[own] = state_dict[clip]


class EmotionCLIP(nn.Module):
    def __init__(self, config: EmotionCLIPConfig):
        super().__init__()
        size = config.backbone["vision_cfg"].get("image_size", 224)
        size = size if isinstance(size, int) else size[0]
        if config.preprocess.crop_size != size:
            raise ValueError(
                f"preprocess crop_size {config.preprocess.crop_size} differs from the vision tower's "
                f"input size {size}"
            )
        self.config = config
        self.backbone = open_clip.CLIP(
            embed_dim=config.backbone["embed_dim"],
            vision_cfg=config.backbone["vision_cfg"],
            text_cfg=config.backbone["text_cfg"],
            quick_gelu=config.quick_gelu,
        )
        if not isinstance(self.backbone.visual, open_clip.transformer.VisionTransformer):
            raise ValueError(
                f"EmotionCLIP needs a ViT vision tower for its subject token; "
                f"{config.backbone_name or 'this backbone'} builds {type(self.backbone.visual).__name__}"
            )
        missing = [m for m in _OPEN_CLIP_PRIVATE if not hasattr(self.backbone.visual, m)]
        if missing:
            raise RuntimeError(
                f"open_clip {open_clip.__version__} lacks VisionTransformer.{', .'.join(missing)}; "
                f"EmotionCLIP is tested with open_clip_torch{OPEN_CLIP_TESTED}"
            )
        self.visual_head = build_temporal_head(config, self.embed_dim)
        # one temperature shared with CLIP (the release's `self.logit_scale = self.backbone.logit_scale`)
        self.logit_scale = self.backbone.logit_scale
        self._register_load_state_dict_pre_hook(_one_logit_scale)

    # ---- sizes -------------------------------------------------------------------------------
    @property
    def embed_dim(self) -> int:
        return int(self.config.backbone["embed_dim"])

    @property
    def video_len(self) -> int:
        return self.config.video_len

    @property
    def image_size(self) -> int:
        return int(self.backbone.visual.image_size[0])

    # ---- encoders ----------------------------------------------------------------------------
    def _check_frames(self, x: torch.Tensor, what: str) -> None:
        h, w = self.backbone.visual.image_size
        if x.shape[-3:] != (3, h, w):
            raise ValueError(f"{what} frames must be [3, {h}, {w}], got {list(x.shape[-3:])}")

    def _subject_token(self, mask: torch.Tensor | None, n: int) -> torch.Tensor:
        """``[N, 1, width]``: the positional embeddings of the patches the subject covers, weighted
        by how much of each it covers (zero without a subject), through the tower's ``ln_pre``."""
        visual = self.backbone.visual
        pos = visual.positional_embedding[1:]
        if mask is None:
            token = pos.new_zeros(n, pos.shape[1])
        else:  # fraction of each patch covered by the subject, [N, grid_h * grid_w]
            cover = F.avg_pool2d(_as_float_mask(mask, torch.float32)[:, None], visual.patch_size).flatten(1)
            token = cover.to(pos.dtype) @ pos
        # LayerNorm is per token, so normalising it alone equals normalising it inside the sequence
        return visual.ln_pre(token[:, None])

    def encode_image(self, image: torch.Tensor, image_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frame features ``[B, D]`` (un-normalised) with the subject token from ``image_mask``."""
        if image.ndim != 4:
            raise ValueError(f"image must be [B, 3, H, W], got shape {list(image.shape)}")
        self._check_frames(image, "image")
        if image_mask is not None and tuple(image_mask.shape) != (image.shape[0], *image.shape[-2:]):
            raise ValueError(
                f"image_mask must be [B, H, W] = {[image.shape[0], *image.shape[-2:]]}, got {list(image_mask.shape)}"
            )
        visual = self.backbone.visual
        # open_clip's own steps (pinned and tested in test_model_parity.py): patch + position
        # embedding, patch dropout and ln_pre; the subject token is appended after them
        x = visual._embeds(image.to(visual.conv1.weight.dtype))
        x = torch.cat([x, self._subject_token(image_mask, x.shape[0]).to(x.dtype)], dim=1)
        x = visual.transformer(x)
        pooled, _ = visual._pool(x[:, :-1])  # the subject token is a prompt, not an output token
        return pooled @ visual.proj if visual.proj is not None else pooled

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Clip features ``[B, D]`` (un-normalised) from ``video [B, T, 3, H, W]``."""
        b, t = check_video(video, video_mask)
        self._check_frames(video, "video")
        self.visual_head.check_length(t)
        if video_mask is not None:
            video_mask = video_mask.flatten(0, 1)
        frames = self.encode_image(video.flatten(0, 1), video_mask)
        return self.visual_head(frames.view(b, t, -1))

    def encode_text(self, tokens: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Text features ``[B, D]`` (un-normalised). ``validate`` checks the token ids against the
        vocabulary, which reads them back from the device: the training forward skips it there."""
        check_tokens(tokens, self.backbone.vocab_size, self.backbone.context_length, check_ids=validate)
        return self.backbone.encode_text(tokens)

    def forward(
        self, video: torch.Tensor, video_mask: torch.Tensor | None, tokens: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        video_features = F.normalize(self.encode_video(video, video_mask), dim=-1)
        # ids are checked for free on the CPU; on an accelerator the loader's tokenizer vouches for them
        on_host = tokens.device.type == "cpu" and not torch.compiler.is_compiling()
        text_features = F.normalize(self.encode_text(tokens, validate=on_host), dim=-1)
        return video_features, text_features, self.logit_scale.exp()

    # ---- training helpers --------------------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def lock_towers(self, image: bool = False, text: bool = False) -> None:
        """Freeze the vision and/or text tower (open_clip's own lock functions)."""
        if image:
            self.backbone.lock_image_tower()
        if text:
            self.backbone.lock_text_tower()
