"""Loss arithmetic, finiteness, and cross-process equivalence."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import emotionclip
from emotionclip.loss import ClipLoss, SentimentGuidedClipLoss, sentiment_weights


def _features(n, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    t = F.normalize(torch.randn(n, d, generator=g), dim=-1)
    return v, t


def test_weights_match_release_formula():
    logits = torch.randn(6, 7)
    p = logits.softmax(-1)
    # the release's arithmetic, spelled out: W[i, j] = 1 / |sum p_j log p_j - sum log p_i * p_j|
    kl = (p * p.log()).sum(-1)[None, :] - p.log() @ p.T
    expected = 1 / kl.abs()
    expected.fill_diagonal_(0)
    torch.testing.assert_close(sentiment_weights(logits), expected)


def test_clip_loss_is_symmetric_infonce():
    v, t = _features(5)
    scale = torch.tensor(14.0)
    logits = scale * v @ t.T
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(ClipLoss()(v, t, scale), expected)
    # alpha = 0 or no sentiment: the guided loss is the plain loss
    torch.testing.assert_close(SentimentGuidedClipLoss(0.0)(v, t, scale, torch.randn(5, 7)), expected)
    torch.testing.assert_close(SentimentGuidedClipLoss(10.0)(v, t, scale), expected)


@pytest.mark.parametrize("autocast", [False, True])
def test_identical_sentiments_stay_finite(autocast):
    """Repeated subtitles ("Okay.", "Yeah.") have identical sentiment rows: KL = 0."""
    v, t = _features(8)
    v.requires_grad_(True)
    t.requires_grad_(True)
    sentiment = torch.randn(8, 7)
    sentiment[3] = sentiment[1]
    sentiment[5] = sentiment[1]
    sentiment[6] = torch.tensor([80.0, -80, -80, -80, -80, -80, -80])  # probabilities underflow to 0
    sentiment[7] = sentiment[6]
    scale = torch.tensor(100.0, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = SentimentGuidedClipLoss(10.0)(v.bfloat16() if autocast else v, t, scale, sentiment)
    loss.backward()
    assert torch.isfinite(loss)
    for g in (v.grad, t.grad, scale.grad):
        assert torch.isfinite(g).all()
    # a negative with the anchor's exact sentiment gets no softmax weight (what the release intended)
    logits = 100.0 * v.detach() @ t.detach().T - 10.0 * sentiment_weights(sentiment)
    assert logits.softmax(-1)[1, 3] == 0


def test_feature_shape_errors():
    v, t = _features(4)
    with pytest.raises(ValueError, match="must both be"):
        ClipLoss()(v, t[:3], torch.tensor(1.0))
    with pytest.raises(ValueError, match="sentiment_logits must be"):
        SentimentGuidedClipLoss()(v, t, torch.tensor(1.0), torch.randn(3, 7))


# ---- two processes (gloo) vs one process on the concatenated batch ---------------------------
BATCH, FRAMES = 4, 2


def _batch():
    g = torch.Generator().manual_seed(7)
    video = torch.randn(BATCH, FRAMES, 3, 224, 224, generator=g)
    mask = torch.rand(BATCH, FRAMES, 224, 224, generator=g) > 0.6
    tokens = emotionclip.tokenize(["I am furious", "what a lovely day", "okay", "okay"])
    sentiment = torch.randn(BATCH, 7, generator=g)
    sentiment[3] = sentiment[2]  # a repeated subtitle across the two ranks' halves
    return video, mask, tokens, sentiment


def _model():
    torch.manual_seed(0)
    return emotionclip.create_model("tiny", video_len=FRAMES, head_layers=1).eval()  # eval: no dropout


def _step(model, loss_fn, video, mask, tokens, sentiment):
    v, t, scale = model(video, mask, tokens)
    loss = loss_fn(v, t, scale, sentiment)
    loss.backward()
    return loss


def _worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    results = {}
    for local_loss in (True, False):
        model = torch.nn.parallel.DistributedDataParallel(_model())
        loss_fn = SentimentGuidedClipLoss(
            10.0, local_loss=local_loss, gather_with_grad=True, rank=rank, world_size=world_size
        )
        video, mask, tokens, sentiment = _batch()
        part = slice(rank * BATCH // world_size, (rank + 1) * BATCH // world_size)
        loss = _step(model, loss_fn, video[part], mask[part], tokens[part], sentiment[part])
        dist.all_reduce(loss.detach_())
        grads = {k: p.grad for k, p in model.module.named_parameters() if p.grad is not None}
        results[local_loss] = {"loss": loss / world_size, "grads": grads}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    """DDP over 2 gloo ranks, features gathered with grad, vs one process on the whole batch."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    model = _model()
    loss = _step(model, SentimentGuidedClipLoss(10.0), *_batch())
    ref = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
    for rank in (0, 1):
        for local_loss, got in torch.load(tmp_path / f"rank{rank}.pt", weights_only=True).items():
            torch.testing.assert_close(got["loss"], loss.detach(), atol=1e-5, rtol=1e-5)
            assert set(got["grads"]) == set(ref)
            for k, g in ref.items():
                torch.testing.assert_close(
                    got["grads"][k], g, atol=1e-5, rtol=1e-4, msg=f"rank {rank} local_loss={local_loss}: {k}"
                )
