"""Broken samples in training shards are skipped and counted, never a crash."""

from __future__ import annotations

import logging

import pytest

from _train_util import T, write_shards
from emotionclip.shards.reader import build_index, expand_shard_urls, make_train_loader
from emotionclip.shards.writer import iter_tar, write_tar_atomic


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One good shard of 6 clips and one whose clips 0-2 lack their .json, have a broken .json,
    or a broken frame (clips 3-5 are fine)."""
    folder = tmp_path_factory.mktemp("hostile")
    write_shards(folder, n_shards=2, clips_per_shard=6, frames=5)
    members = []
    for name, data in iter_tar(folder / "shard-000001.tar"):
        if name == "vid1__c0000.json":
            continue
        if name == "vid1__c0001.json":
            data = b'{"video_id": "vid1", "neut'
        if name.startswith("vid1__c0002.f"):
            data = b"not a jpeg"
        members.append((name, data))
    write_tar_atomic(folder / "shard-000001.tar", members)
    return str(folder / "shard-{000000..000001}.tar")


def test_index_skips_and_counts_samples_without_a_readable_json(hostile):
    index = build_index(expand_shard_urls(hostile))
    assert len(index) == 10
    assert len(index.skipped) == 2
    assert any("vid1__c0000 has no .json" in s for s in index.skipped)
    assert any("vid1__c0001 has a broken .json" in s and "shard-000001.tar" in s for s in index.skipped)


def test_uniform_loader_replaces_a_broken_frame_and_reports_it(hostile, caplog):
    loader = make_train_loader(hostile, batch_size=5, video_len=T, image_size=64, resize=73, seed=0)
    with caplog.at_level(logging.WARNING):
        batches = list(loader)
    keys = [k for b in batches for k in b["key"]]
    skipped = [s for b in batches for s in b["skipped"]]
    assert len(batches) == 2 and len(keys) == 10 and "vid1__c0002" not in keys
    assert len(skipped) == 1 and "shard-000001.tar: sample vid1__c0002" in skipped[0]
    assert "replaced by the next clip" in caplog.text


def test_stream_loader_skips_them_too(hostile, caplog):
    loader = make_train_loader(
        hostile, batch_size=1, video_len=T, image_size=64, resize=73, order="stream", max_neutral=0.05
    )
    with caplog.at_level(logging.WARNING):
        keys = [k for b in loader for k in b["key"]]
    assert sorted(keys) == sorted(
        [f"vid0__c{c:04d}" for c in range(6)] + [f"vid1__c{c:04d}" for c in (3, 4, 5)]
    )
    assert "vid1__c0000 has no .json" in caplog.text and "broken .json" in caplog.text
