"""The training loader: the release's uniform shuffle, determinism, uint8 batches normalised on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import emotionclip
from _train_util import T, make_batch, micro_backbone, tiny_config, write_shards
from emotionclip.shards.reader import ClipDecoder, build_index, make_train_loader, uniform_batches
from emotionclip.train.distributed import DistEnv
from emotionclip.train.loop import LossSelector, build_model, compute_loss
from emotionclip.transform import normalize_frames


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("shards"), n_shards=3, clips_per_shard=6, frames=5)


def _keys(loader):
    return [batch["key"] for batch in loader]


def test_uniform_batches_are_the_release_sampler():
    n, b = 103, 8
    for world in (1, 3):
        per_rank = [
            uniform_batches(n, b, r, world, seed=1, epoch=0, epoch_batches=None) for r in range(world)
        ]
        flat = [i for rank in per_rank for batch in rank for i in batch]
        assert all(len(rank) == -(-n // world) // b for rank in per_rank)  # ceil(n / world) // b
        assert len(set(flat)) == len(flat)  # within an epoch no clip twice (n is not padded much)
    again = uniform_batches(n, b, 0, 1, seed=1, epoch=0, epoch_batches=None)
    assert again == uniform_batches(n, b, 0, 1, seed=1, epoch=0, epoch_batches=None)
    assert again != uniform_batches(n, b, 0, 1, seed=1, epoch=1, epoch_batches=None)
    # with a fixed epoch length every clip comes once before any comes twice, across epochs and ranks
    drawn = [
        i
        for e in range(4)
        for r in range(2)
        for batch in uniform_batches(n, b, r, 2, seed=3, epoch=e, epoch_batches=3)
        for i in batch
    ]
    assert len(drawn) == 4 * 2 * 3 * b and len(set(drawn[:n])) <= n
    assert sorted(np.bincount(drawn, minlength=n).tolist())[0] >= 1  # 192 draws cover all 103


def test_uniform_loader_mixes_every_shard_and_is_deterministic(shards):
    kwargs = dict(batch_size=6, video_len=T, image_size=64, resize=73, seed=0, epoch=0)
    first = _keys(make_train_loader(shards, **kwargs))
    assert len(first) == 3 and sorted(k for b in first for k in b) == sorted(
        f"vid{s}__c{c:04d}" for s in range(3) for c in range(6)
    )
    assert len({k.split("__")[0] for k in first[0]}) > 1  # a batch mixes videos
    assert _keys(make_train_loader(shards, num_workers=2, **kwargs)) == first  # workers change nothing
    assert _keys(make_train_loader(shards, **{**kwargs, "epoch": 1})) != first
    batch = next(iter(make_train_loader(shards, **kwargs)))
    assert batch["video"].dtype == torch.uint8 and batch["video_mask"].dtype == torch.bool
    assert batch["video"].shape == (6, T, 3, 64, 64) and batch["skipped"] == []


def test_filters_at_training_time(shards):
    index = build_index(shards.replace("{000000..000002}", "000000").split("::"))
    assert len(index.select(min_has_person=0.0)) == len(index) == 6
    assert len(index.select(max_neutral=0.0)) == 0  # every clip has neutral 0.01
    assert len(index.select(min_has_person=1.0)) == 6


def test_resampled_stream_is_the_same_on_every_run_and_resume(shards):
    kwargs = dict(
        batch_size=4, video_len=T, image_size=64, resize=73, order="stream", resampled=True,
        epoch_batches=4, seed=5, epoch=2, num_workers=2,
    )  # fmt: skip
    first = _keys(make_train_loader(shards, **kwargs))
    assert len(first) == 4
    assert _keys(make_train_loader(shards, **kwargs)) == first
    resumed = iter(make_train_loader(shards, **kwargs))
    next(resumed)  # a resume after one batch replays the rest
    assert [b["key"] for b in resumed] == first[1:]


def test_uint8_batches_normalised_on_the_device_equal_the_float_path(shards, tmp_path):
    sample_loader = make_train_loader(shards, batch_size=4, video_len=T, image_size=64, resize=73)
    raw = sample_loader.dataset.raw_sample(0)
    torch.manual_seed(11)
    u8 = ClipDecoder(T, 64, 73)(raw)
    as_float = ClipDecoder(T, 64, 73)
    as_float.transform.normalize = True
    torch.manual_seed(11)
    f32 = as_float(raw)
    assert u8["video"].dtype == torch.uint8 and torch.equal(normalize_frames(u8["video"]), f32["video"])
    assert torch.equal(u8["video_mask"], f32["video_mask"].bool())
    long_raw = {**raw, "txt": " ".join(["so much to say about this"] * 30).encode()}
    cut = ClipDecoder(T, 64, 73, text_truncation="release")(long_raw)["tokens"]
    assert torch.equal(cut, emotionclip.tokenize(long_raw["txt"].decode(), truncation="release")[0])
    assert not torch.equal(cut, ClipDecoder(T, 64, 73)(long_raw)["tokens"])

    cfg = tiny_config(tmp_path, backbone=micro_backbone(tmp_path))  # the full vocabulary: real text
    model = build_model(cfg).eval()
    batch = next(iter(sample_loader))
    floats = {
        **batch,
        "video": normalize_frames(batch["video"]),
        "video_mask": batch["video_mask"].to(torch.uint8),
    }
    losses = LossSelector(cfg, DistEnv())
    with torch.no_grad():
        a, _ = compute_loss(model, batch, losses, "fp32", torch.device("cpu"))
        b, _ = compute_loss(model, floats, losses, "fp32", torch.device("cpu"))
        c, _ = compute_loss(model, make_batch(0, batch_size=4), losses, "fp32", torch.device("cpu"))  # float
    assert a.item() == b.item() and torch.isfinite(c)  # float batches keep working


def test_training_from_shards_uses_the_uniform_order(shards, tmp_path):
    from emotionclip.train import train

    cfg = tiny_config(
        tmp_path, data=shards, batch_size=4, epochs=2, warmup_steps=3, backbone=micro_backbone(tmp_path)
    )
    result = train(cfg)
    assert result.steps == list(range(1, 9))  # 18 clips // 4 = 4 steps per epoch
    assert [h["epoch"] for h in result.history] == [0] * 4 + [1] * 4
    assert (tmp_path / "run" / "data-index.npz").is_file()


def test_the_models_preprocessing_reaches_the_loader(shards):
    from emotionclip.transform import PreprocessConfig

    common = dict(batch_size=6, video_len=T, seed=0, epoch=0)
    torch.manual_seed(0)  # the same frames and crops for both
    kept = next(iter(make_train_loader(shards, preprocess=PreprocessConfig(64, 73), **common)))
    strict = PreprocessConfig(64, 73, box_score_threshold=0.95)  # the shards' boxes score 0.9
    torch.manual_seed(0)
    dropped = next(iter(make_train_loader(shards, preprocess=strict, **common)))
    assert kept["video"].shape[-2:] == (64, 64) and kept["video_mask"].any()
    assert not dropped["video_mask"].any() and torch.equal(kept["video"], dropped["video"])
