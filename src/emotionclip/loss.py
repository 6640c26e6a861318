"""Contrastive losses: CLIP's symmetric InfoNCE and EmotionCLIP's sentiment-guided variant.

Sentiment-guided contrastive learning (the release): with ``p = softmax(sentiment_logits)``,
``W[i, j] = 1 / |KL(p_j ‖ p_i)|`` and ``W[i, i] = 0``; both scaled logit matrices (video→text and
text→video) become ``logits − α·W`` with the same, untransposed ``W``. Negatives whose sentiment
resembles the anchor's are pushed down, so they stop acting as negatives.

Finiteness: two identical sentiment rows (subtitles repeat "Okay.", "Yeah.") give KL = 0 and an
infinite weight. The release then relied on ``−inf`` logits; any rounding (bf16, a zero probability
whose ``log`` is ``−inf`` times 0) turns that into NaN. Here KL is computed from ``log_softmax`` in
fp32 (no ``0 · log 0``), clamped below at ``kl_floor`` (1e-6, so ``W ≤ 1e6`` and the logit is pushed
down by ``α·1e6`` — its softmax weight is exactly 0, as with ``−inf``), and the whole loss runs in
fp32 even under autocast. On the reference fixture the smallest off-diagonal KL is far above the
floor, so the values are unchanged (tests/test_loss.py checks both).

Across processes, features (and sentiment logits) are gathered like open_clip: ``local_loss``
computes only this rank's rows against all columns; ``gather_with_grad`` back-propagates through the
gather. With ``local_loss=True, gather_with_grad=True`` the DDP-averaged gradients equal those of one
process on the concatenated batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, rank: int, world_size: int, group) -> torch.Tensor:
        ctx.rank, ctx.n, ctx.group = rank, x.shape[0], group
        parts = [torch.empty_like(x) for _ in range(world_size)]
        dist.all_gather(parts, x.contiguous(), group=group)
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n], None, None, None


def gather_tensors(
    x: torch.Tensor, rank: int, world_size: int, with_grad: bool, keep_local_grad: bool, group=None
) -> torch.Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order; equal batch per rank)."""
    if world_size == 1:
        return x
    if with_grad:
        return _GatherWithGrad.apply(x, rank, world_size, group)
    parts = [torch.zeros_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.detach().contiguous(), group=group)
    if keep_local_grad:
        parts[rank] = x  # gradients still flow into this rank's own features
    return torch.cat(parts, dim=0)


def sentiment_weights(sentiment_logits: torch.Tensor, kl_floor: float = 1e-6) -> torch.Tensor:
    """``W[i, j] = 1 / |KL(p_j ‖ p_i)|`` with a zero diagonal, in fp32 and without NaN/inf."""
    logp = F.log_softmax(sentiment_logits.float(), dim=-1)
    p = logp.exp()
    neg_entropy = (p * logp).sum(dim=-1)  # Σ_k p_j,k log p_j,k, per column j
    cross = logp @ p.T  # [i, j] = Σ_k log p_i,k · p_j,k
    kl = neg_entropy[None, :] - cross
    w = kl.abs().clamp_min(kl_floor).reciprocal()
    return w.fill_diagonal_(0.0)


class ClipLoss(nn.Module):
    """Symmetric InfoNCE on L2-normalised features (open_clip's ClipLoss semantics)."""

    def __init__(
        self,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        rank: int = 0,
        world_size: int = 1,
        group=None,
    ):
        super().__init__()
        self.group = group
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad
        self.rank = rank
        self.world_size = world_size

    def _gather(self, x: torch.Tensor, with_grad: bool | None = None) -> torch.Tensor:
        with_grad = self.gather_with_grad if with_grad is None else with_grad
        return gather_tensors(
            x, self.rank, self.world_size, with_grad, keep_local_grad=not self.local_loss, group=self.group
        )

    def logits(self, video_features, text_features, logit_scale):
        v, t = video_features.float(), text_features.float()
        scale = logit_scale.float()
        if self.world_size > 1:
            all_v, all_t = self._gather(v), self._gather(t)
            if self.local_loss:
                return scale * v @ all_t.T, scale * t @ all_v.T
            per_video = scale * all_v @ all_t.T
            return per_video, per_video.T
        per_video = scale * v @ t.T
        return per_video, per_video.T

    def _labels(self, n: int, device) -> torch.Tensor:
        offset = n * self.rank if (self.world_size > 1 and self.local_loss) else 0
        return torch.arange(n, device=device) + offset

    def _check(self, video_features, text_features, sentiment_logits):
        if video_features.ndim != 2 or video_features.shape != text_features.shape:
            raise ValueError(
                f"video and text features must both be [B, D]; got {list(video_features.shape)} "
                f"and {list(text_features.shape)}"
            )
        if sentiment_logits is not None and (
            sentiment_logits.ndim != 2 or sentiment_logits.shape[0] != video_features.shape[0]
        ):
            raise ValueError(
                f"sentiment_logits must be [B, C] with B = {video_features.shape[0]}, "
                f"got {list(sentiment_logits.shape)}"
            )

    def _penalty(self, sentiment_logits, n: int):
        """What is subtracted from both logit matrices (nothing for plain InfoNCE)."""
        return 0.0

    def forward(self, video_features, text_features, logit_scale, sentiment_logits=None) -> torch.Tensor:
        """``sentiment_logits`` is accepted (and ignored) so that both losses share one call."""
        self._check(video_features, text_features, sentiment_logits)
        with torch.autocast(device_type=video_features.device.type, enabled=False):
            per_video, per_text = self.logits(video_features, text_features, logit_scale)
            n = per_video.shape[0]
            penalty = self._penalty(sentiment_logits, n)
            labels = self._labels(n, per_video.device)
            return (
                F.cross_entropy(per_video - penalty, labels) + F.cross_entropy(per_text - penalty, labels)
            ) / 2


class SentimentGuidedClipLoss(ClipLoss):
    """ClipLoss with negatives re-weighted by sentiment similarity (α = ``sentiment_scale``).

    Without ``sentiment_logits`` it is the plain ClipLoss.
    """

    def __init__(self, sentiment_scale: float = 10.0, kl_floor: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.sentiment_scale = sentiment_scale
        self.kl_floor = kl_floor

    def _penalty(self, sentiment_logits, n: int):
        if sentiment_logits is None:
            return 0.0
        all_sentiment = self._gather(sentiment_logits.detach().float(), with_grad=False)
        w = sentiment_weights(all_sentiment, self.kl_floor)
        if self.world_size > 1 and self.local_loss:
            w = w[self.rank * n : (self.rank + 1) * n]
        return self.sentiment_scale * w
