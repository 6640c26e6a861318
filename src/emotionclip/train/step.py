"""One optimiser step and what it is built from: the model, its DDP wrapper, the loss, the step.

`TrainStep` is the whole step as `emotionclip train` runs it (forward under autocast, loss,
backward, AdamW, logit-scale clamp); the benchmark times the same object.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from ..precision import autocast
from .config import TrainConfig
from .distributed import DistEnv

logger = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: TrainConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The EmotionCLIP to train: same initial weights on every rank (seeded), towers locked as asked.

    ``config.init`` fine-tunes an EmotionCLIP checkpoint (its architecture comes from the file);
    otherwise a new model from ``backbone`` with CLIP weights from ``pretrained``.
    """
    from ..factory import create_model, load_model

    seed_everything(config.seed)
    if config.init:
        model = load_model(config.init, head_dropout=config.head_dropout)
        logger.info("fine-tuning %s (architecture from the file)", config.init)
    else:
        model = create_model(
            backbone=config.backbone,
            pretrained=config.pretrained,
            temporal_fusion=config.temporal_fusion,
            video_len=config.video_len,
            head_layers=config.head_layers,
            head_dropout=config.head_dropout,
        )
    if config.reset_logit_scale:  # the release's reset_logit_scale
        with torch.no_grad():
            model.logit_scale.fill_(math.log(1 / 0.07))
    model.lock_towers(image=config.lock_image, text=config.lock_text)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model.to(device)


def wrap_model(model: nn.Module, config: TrainConfig, env: DistEnv) -> nn.Module:
    """DDP across processes, then ``torch.compile`` if asked.

    The model has no buffers that change in training, so DDP need not broadcast them every step;
    gradients share memory with DDP's buckets (no copy per step)."""
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[env.device] if env.device.type == "cuda" else None,
            broadcast_buffers=False,
            gradient_as_bucket_view=True,
        )
    if config.compile:
        model = torch.compile(model)
    return model


class LossSelector:
    """Sentiment-guided loss when a batch carries sentiment logits (and α > 0), else CLIP's."""

    def __init__(self, config: TrainConfig, env: DistEnv):
        from ..loss import ClipLoss, SentimentGuidedClipLoss

        common = dict(
            local_loss=config.local_loss,
            gather_with_grad=config.gather_with_grad,
            rank=env.rank,
            world_size=env.world_size,
        )
        self.clip = ClipLoss(**common)
        self.guided = SentimentGuidedClipLoss(sentiment_scale=config.sentiment_scale, **common)
        self.use_sentiment = config.sentiment_scale > 0

    def __call__(self, video_feats, text_feats, logit_scale, sentiment_logits):
        if sentiment_logits is not None and self.use_sentiment:
            return self.guided(video_feats, text_feats, logit_scale, sentiment_logits), "sentiment_guided"
        return self.clip(video_feats, text_feats, logit_scale), "clip"


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def compute_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    losses: LossSelector,
    precision: str,
    device: torch.device,
) -> tuple[torch.Tensor, str]:
    """Forward pass and loss of one batch (already on ``device``)."""
    missing = [k for k in ("video", "tokens") if k not in batch]
    if missing:
        raise KeyError(f"training batch lacks {missing}; it has {sorted(batch)}")
    video = batch["video"]
    if not video.is_floating_point():  # the shard loader ships uint8: normalise here, on the device
        from ..transform import normalize_frames

        pre = _unwrap(model).config.preprocess  # the mean/std the model was trained with
        video = normalize_frames(video, pre.mean, pre.std)
    with autocast(device, precision):
        video_feats, text_feats, logit_scale = model(video, batch.get("video_mask"), batch["tokens"])
    return losses(video_feats, text_feats, logit_scale, batch.get("sentiment_logits"))


def _unwrap(model: nn.Module) -> nn.Module:
    """The EmotionCLIP inside torch.compile / DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class TrainStep:
    """One optimiser step on one batch: forward, loss, backward (scaled for fp16), AdamW, clamp.

    Nothing here waits for the device: the returned loss is a device tensor, read by the loop
    together with the cross-rank flags (one host sync per step)."""

    def __init__(
        self,
        model: nn.Module,
        train_model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: TrainConfig,
        env: DistEnv,
        scaler: torch.amp.GradScaler | None = None,
    ):
        self.model, self.train_model, self.optimizer, self.scaler = model, train_model, optimizer, scaler
        self.config, self.device = config, env.device
        self.losses = LossSelector(config, env)
        self.loss_kind = ""
        # --nonfinite skip without a GradScaler: the step looks at the gradients before AdamW does
        self.guard = config.nonfinite == "skip" and scaler is None

    def __call__(self, batch: dict[str, Any]) -> torch.Tensor:
        batch = to_device(batch, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss, self.loss_kind = compute_loss(
            self.train_model, batch, self.losses, self.config.precision, self.device
        )
        if self.scaler is not None:  # skips the update itself when a gradient is inf/NaN
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            if not self.guard or self._gradients_finite():
                self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, self.config.logit_scale_max)
        return loss.detach()

    def _gradients_finite(self) -> bool:
        """Whether every gradient is finite (one host sync). After DDP's all-reduce the gradients
        are the same on every rank, so every rank skips the same steps."""
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        return not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
