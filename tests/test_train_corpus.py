"""Training on a corpus that `emotionclip prepare` built from ../shared/media plus a generated one."""

import json
from pathlib import Path

import pytest

from _train_util import T, micro_backbone, tiny_config, write_shards
from emotionclip.shards.reader import make_train_loader
from emotionclip.shards.writer import iter_tar
from emotionclip.train import train
from emotionclip.train.data import expand_shards


@pytest.fixture(scope="module")
def prepared_cremad(media_dir, tmp_path_factory):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
    from prepare_support import write_boxes_json

    tmp = tmp_path_factory.mktemp("cremad")
    names = [f"1001_DFA_{e}_XX" for e in ("ANG", "DIS", "FEA", "HAP", "NEU", "SAD")]
    actor = [150.0, 40.0, 330.0, 300.0, 0.9]  # the actor's box in the 480x360 frames
    detector = "json:" + str(write_boxes_json(tmp / "boxes.json", {n: (480, 360, 2.5, actor) for n in names}))
    config = PrepareConfig(detector=detector, scorer="default", filter=ClipFilter(max_neutral=None))
    summary = prepare(media_dir / "cremad" / "transcript.csv", tmp / "out", config)
    assert summary["ok"] == 5
    return tmp / "out"


def test_tiny_model_overfits_a_batch_of_the_prepared_corpus(prepared_cremad, tmp_path):
    generated = write_shards(tmp_path / "generated", n_shards=1, clips_per_shard=8)
    data = f"{prepared_cremad}/shard-000000.tar::{generated}"
    urls = expand_shards(data)
    assert len(urls) == 2 and str(prepared_cremad) in urls[0]
    loader = make_train_loader(urls, batch_size=10, video_len=T, image_size=64, resize=73, seed=0)
    batch = next(iter(loader))
    assert any(text == "Don't forget a jacket" for text in batch["text"])  # real clips are in it
    assert batch["sentiment_logits"].shape == (10, 7)

    backbone = micro_backbone(tmp_path)  # the full CLIP vocabulary: real subtitles
    result = train(
        tiny_config(tmp_path, max_steps=30, batch_size=10, backbone=backbone),
        batches=lambda epoch: [batch] * 30,
    )
    assert result.loss_kind == "sentiment_guided"
    first, last = result.losses[0], sum(result.losses[-3:]) / 3
    assert last < 0.5 * first, result.losses

    # and straight from the shards: one epoch of the mixed corpus through the real loader, with the
    # recipe's neutral threshold (0.05) dropping the real clips the sentiment model finds neutral
    neutral = [
        json.loads(data)["neutral"]
        for name, data in iter_tar(Path(urls[0]))
        if name.endswith(".json") and not name.endswith(".boxes.json")
    ]
    kept = 8 + sum(n <= 0.05 for n in neutral)
    cfg = tiny_config(tmp_path / "shards", data=data, batch_size=4, epochs=1, backbone=backbone)
    run = train(cfg)
    assert run.steps == list(range(1, kept // 4 + 1)) and run.loss_kind == "sentiment_guided"
