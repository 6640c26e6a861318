import json

import numpy as np
import pytest
import torch

import emotionclip
from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
from emotionclip.shards.reader import ClipDecoder, expand_shard_urls, make_train_loader
from emotionclip.transform import normalize_frames
from prepare_support import KeywordScorer, write_boxes_json

CREMAD = [f"1001_DFA_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
BOX = [150.0, 40.0, 330.0, 300.0, 0.9]  # in the 480x360 source frames


@pytest.fixture(scope="module")
def corpus(media_dir, tmp_path_factory):
    """Six CREMA-D clips in three shards of two."""
    tmp = tmp_path_factory.mktemp("corpus")
    det = "json:" + str(write_boxes_json(tmp / "boxes.json", {n: (480, 360, 2.5, BOX) for n in CREMAD}))
    config = PrepareConfig(
        detector=det,
        scorer=KeywordScorer(),
        shard_clips=2,
        filter=ClipFilter(max_neutral=None, min_person_fraction=0.0, min_duration=1.0),
    )
    summary = prepare(media_dir / "cremad" / "transcript.csv", tmp / "out", config)
    assert summary["ok"] == 6
    return tmp / "out"


def all_keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def test_batches_have_model_shapes(corpus):
    loader = make_train_loader(corpus, batch_size=4, num_workers=0, drop_last=False)
    batches = list(loader)
    assert [len(b["key"]) for b in batches] == [4, 2]
    b = batches[0]
    assert b["video"].shape == (4, 8, 3, 224, 224) and b["video"].dtype == torch.uint8
    assert b["video_mask"].shape == (4, 8, 224, 224) and b["video_mask"].dtype == torch.bool
    assert b["tokens"].shape == (4, 77) and b["tokens"].dtype == torch.long
    assert b["sentiment_logits"].shape == (4, 7) and b["sentiment_logits"].dtype == torch.float32
    assert torch.equal(b["tokens"][0], emotionclip.tokenize(["Don't forget a jacket"])[0])
    assert b["text"][0] == "Don't forget a jacket" and len(b["video_id"]) == 4
    # ImageNet-normalised on the device, and a subject mask covering the actor but not the whole frame
    pixels = normalize_frames(b["video"])
    assert -2.2 < pixels.min() < -1.0 and 1.0 < pixels.max() < 2.7
    frac = b["video_mask"].float().mean().item()
    assert 0.2 < frac < 0.95
    # a crop window per frame (the release): the mask moves although the box does not
    assert not torch.equal(b["video_mask"][:, :1].expand_as(b["video_mask"]), b["video_mask"])


def test_frame_sampling_is_sorted_without_replacement():
    dec = ClipDecoder(video_len=8)
    for _ in range(20):
        idx = dec.frame_indices(18).tolist()
        assert idx == sorted(set(idx)) and len(idx) == 8 and max(idx) < 18
    draws = {tuple(dec.frame_indices(18).tolist()) for _ in range(10)}
    assert len(draws) > 1  # random
    short = dec.frame_indices(5).tolist()
    assert len(short) == 8 and short == sorted(short) and set(short) <= set(range(5))


def test_ranks_and_workers_read_disjoint_shards(corpus):
    keys = set(all_keys(make_train_loader(corpus, batch_size=1, drop_last=False)))
    assert len(keys) == 6
    per_rank = [
        all_keys(make_train_loader(corpus, batch_size=1, drop_last=False, rank=r, world_size=2))
        for r in (0, 1)
    ]
    assert set(per_rank[0]).isdisjoint(per_rank[1]) and set(per_rank[0]) | set(per_rank[1]) == keys
    assert per_rank[0] and per_rank[1]
    with_workers = all_keys(make_train_loader(corpus, batch_size=1, num_workers=2, drop_last=False))
    assert sorted(with_workers) == sorted(keys)  # every clip exactly once across the 2 workers


def test_resampled_epoch_and_score_filters(corpus):
    loader = make_train_loader(corpus, batch_size=2, resampled=True, epoch_batches=5)
    assert len(list(loader)) == 5
    assert all_keys(make_train_loader(corpus, batch_size=1, drop_last=False, max_neutral=0.0)) == []
    kept = all_keys(make_train_loader(corpus, batch_size=1, drop_last=False, min_has_person=1.0))
    assert len(kept) == 6


def test_shard_urls_from_folder_manifest_list_and_pattern(corpus):
    from_dir = expand_shard_urls(corpus)
    assert from_dir == expand_shard_urls(corpus / "manifest.json") and len(from_dir) == 3
    assert expand_shard_urls(str(corpus / "shard-{000000..000002}.tar")) == from_dir
    assert expand_shard_urls(from_dir) == from_dir
    manifest = json.loads((corpus / "manifest.json").read_text())
    assert manifest["clips"] == 6 and sum(s["clips"] for s in manifest["shards"]) == 6


def test_training_step_of_the_core_model_on_a_batch(corpus):
    torch.manual_seed(0)
    model = emotionclip.create_model(backbone="tiny", video_len=8, head_layers=1)
    loss_fn = emotionclip.SentimentGuidedClipLoss(sentiment_scale=10.0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(iter(make_train_loader(corpus, batch_size=4)))
    before = [p.detach().clone() for p in model.parameters()]
    video = normalize_frames(batch["video"])
    video_f, text_f, scale = model(video, batch["video_mask"], batch["tokens"])
    loss = loss_fn(video_f, text_f, scale, batch["sentiment_logits"])
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    changed = sum(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters(), strict=True))
    assert changed > len(before) // 2
    assert np.isfinite(loss.item())
