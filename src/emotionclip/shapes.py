"""The input checks every model runner shares (``EmotionCLIP`` and the exported graphs)."""

from __future__ import annotations

import torch


def check_video(video: torch.Tensor, video_mask: torch.Tensor | None) -> tuple[int, int]:
    """``(B, T)`` of ``video [B, T, 3, H, W]``; a ``video_mask`` must be ``[B, T, H, W]``."""
    if video.ndim != 5:
        raise ValueError(f"video must be [B, T, 3, H, W], got shape {list(video.shape)}")
    b, t = video.shape[:2]
    if video_mask is not None and tuple(video_mask.shape) != (b, t, *video.shape[-2:]):
        raise ValueError(
            f"video_mask must be [B, T, H, W] = {[b, t, *video.shape[-2:]]}, got {list(video_mask.shape)}"
        )
    return b, t
