"""Training data from prepared shards: `make_train_loader(urls, ...)`.

Per clip: T frame indices drawn at random without replacement and sorted, only those JPEGs decoded,
one random 224 crop of the short-side-256 frames applied identically to the subject mask (the
release's augmentation), ImageNet normalisation, CLIP tokens. Batches are dicts
``{video [B,T,3,224,224] float, video_mask [B,T,224,224] uint8, tokens [B,77] long,
sentiment_logits [B,7] float}`` plus metadata lists (``key``, ``text``, ``video_id``, ``start``,
``end``, ``neutral``, ``has_person``).

Shards are split between ``torch.distributed`` ranks, then between DataLoader workers, so every
reader sees different shards. With several ranks, pass ``resampled=True`` and ``epoch_batches`` so
that every rank yields the same number of batches (unequal counts would stall DDP).
"""

from __future__ import annotations

import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from emotionclip.tokenizer import tokenize
from emotionclip.transform import FrameTransform, boxes_to_mask

logger = logging.getLogger(__name__)

META_FIELDS = ("key", "text", "video_id", "start", "end", "neutral", "has_person")


def expand_shard_urls(urls: str | Path | list) -> list[str]:
    """Shard URLs from: a list, a brace pattern (``out/shard-{000000..000099}.tar``, ``pipe:...``),
    a prepared folder (its ``manifest.json``, else its ``*.tar``), or a manifest path."""
    if isinstance(urls, (list, tuple)):
        return [str(u) for u in urls]
    text = str(urls)
    path = Path(text)
    if path.is_dir():
        manifest = path / "manifest.json"
        if manifest.is_file():
            path = manifest
        else:
            found = sorted(str(p) for p in path.glob("*.tar"))
            if not found:
                raise FileNotFoundError(f"{path}: no manifest.json and no .tar shards")
            return found
    if path.suffix == ".json" and path.is_file():
        shards = json.loads(path.read_text(encoding="utf-8")).get("shards")
        if not shards:
            raise ValueError(f"{path}: manifest lists no shards")
        return [str(path.parent / s["name"]) for s in shards]
    expanded = wds.shardlists.expand_urls(text)
    local = [u for u in expanded if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(expanded)} shards do not exist, e.g. {missing[0]}")
    return expanded


def _dist_rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ClipDecoder:
    """Raw WebDataset sample (bytes per field) → training tensors."""

    def __init__(
        self, video_len: int = 8, image_size: int = 224, resize: int = 256, person_score: float = 0.5
    ):
        self.video_len = video_len
        self.person_score = person_score
        self.transform = FrameTransform(image_size=image_size, resize=resize, train=True)

    def frame_indices(self, n: int) -> torch.Tensor:
        if n >= self.video_len:
            return torch.randperm(n)[: self.video_len].sort().values
        return torch.randint(n, (self.video_len,)).sort().values  # short clip: repeat frames

    def __call__(self, sample: dict) -> dict:
        meta = json.loads(sample["json"])
        frame_keys = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
        if not frame_keys:
            raise ValueError(f"{sample.get('__url__')}: sample {sample['__key__']} has no frames")
        idx = self.frame_indices(len(frame_keys)).tolist()
        frames = np.stack(
            [np.asarray(Image.open(io.BytesIO(sample[frame_keys[i]])).convert("RGB")) for i in idx]
        )
        h, w = frames.shape[1:3]
        boxes = json.loads(sample["boxes.json"])
        masks = np.stack(
            [
                boxes_to_mask(np.asarray(boxes[i], np.float32).reshape(-1, 5), h, w, self.person_score)
                for i in idx
            ]
        )
        pixels, mask = self.transform(frames, masks)
        text = sample["txt"].decode("utf-8")
        return {
            "video": pixels,
            "video_mask": mask,
            "tokens": tokenize([text])[0],
            "sentiment_logits": torch.tensor(meta["sentiment_logits"], dtype=torch.float32),
            "key": sample["__key__"],
            "text": text,
            **{k: meta[k] for k in ("video_id", "start", "end", "neutral", "has_person")},
        }


def collate(samples: list[dict]) -> dict:
    batch = {
        k: torch.stack([s[k] for s in samples]) for k in ("video", "video_mask", "tokens", "sentiment_logits")
    }
    batch.update({k: [s[k] for s in samples] for k in META_FIELDS})
    return batch


def _meta_filter(max_neutral: float | None, min_has_person: float | None):
    def keep(sample: dict) -> bool:
        meta = json.loads(sample["json"])
        if max_neutral is not None and meta["neutral"] > max_neutral:
            return False
        return min_has_person is None or meta["has_person"] >= min_has_person

    return keep


def make_train_loader(
    urls: str | Path | list,
    batch_size: int,
    num_workers: int = 0,
    video_len: int = 8,
    image_size: int = 224,
    resize: int = 256,
    shuffle_buffer: int = 500,
    resampled: bool = False,
    epoch_batches: int | None = None,
    max_neutral: float | None = None,
    min_has_person: float | None = None,
    drop_last: bool = True,
    seed: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    pin_memory: bool = False,
) -> wds.WebLoader:
    """A DataLoader over prepared shards yielding ready-to-train batch dicts (see module docstring).

    ``resampled=False``: each pass reads every shard once, shards shuffled with ``seed`` + epoch,
    split disjointly between ranks (``rank``/``world_size`` or ``torch.distributed``) then workers.
    ``resampled=True``: each rank/worker draws shards at random forever; ``epoch_batches`` then
    sets how many batches one pass over the loader yields per rank (rounded up to a multiple of
    the workers). ``shuffle_buffer=0`` keeps
    shard order. ``max_neutral`` / ``min_has_person`` filter clips by their recorded scores.
    """
    shard_urls = expand_shard_urls(urls)
    rank, world_size = _dist_rank_world(rank, world_size)
    readers = world_size * max(1, num_workers)
    if not resampled and len(shard_urls) < readers:
        logger.warning(
            "%d shards for %d readers (ranks x workers): some readers get no data; "
            "write smaller shards or use resampled=True",
            len(shard_urls),
            readers,
        )
    if resampled:
        stages = [wds.ResampledShards(shard_urls, seed=seed + rank)]
    else:
        stages = [wds.SimpleShardList(shard_urls)]
        if shuffle_buffer:
            stages.append(wds.detshuffle(bufsize=len(shard_urls), initial=len(shard_urls), seed=seed))
        stages += [_RankSplit(rank, world_size), wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(handler=wds.warn_and_continue))
    if shuffle_buffer:
        # seeded so that a resumed run replays the same clip order (seed changes per epoch and rank)
        stages.append(
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed * 100_003 + rank)
        )
    if max_neutral is not None or min_has_person is not None:
        stages.append(wds.select(_meta_filter(max_neutral, min_has_person)))
    stages += [
        wds.map(ClipDecoder(video_len, image_size, resize), handler=wds.warn_and_continue),
        wds.batched(batch_size, collation_fn=collate, partial=not drop_last),
    ]
    dataset = wds.DataPipeline(*stages)
    if epoch_batches is not None:  # with_epoch counts per worker process
        dataset = dataset.with_epoch(math.ceil(epoch_batches / max(1, num_workers)))
    return wds.WebLoader(
        dataset,
        batch_size=None,
        shuffle=False,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
    )


class _RankSplit:
    """Every ``world_size``-th shard from ``rank`` (after the rank-identical shard shuffle)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, src):
        for k, item in enumerate(src):
            if k % self.world_size == self.rank:
                yield item
