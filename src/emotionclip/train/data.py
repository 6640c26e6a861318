"""Where training batches come from: WebDataset shards via the prepare stage's loader.

A *batch source* is ``source(epoch) -> iterable of batch dicts`` for this process
(``video [B,T,3,H,W]``, ``video_mask [B,T,H,W]``, ``tokens [B,77]``, optionally
``sentiment_logits [B,7]``). It should give the same batches for the same epoch every time it is
called, so that a resumed run can skip the batches it trained on before the interruption.

Data randomness (frame sampling, crops, loader-worker seeds) draws from its own torch RNG stream,
seeded per (seed, epoch, rank) — see `EpochBatches` — so it replays identically on resume and does
not disturb the training RNG (dropout).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from .config import TrainConfig
from .distributed import DistEnv

logger = logging.getLogger(__name__)

BatchSource = Callable[[int], Iterable[dict[str, torch.Tensor]]]
_REMOTE_PREFIXES = ("http://", "https://", "s3://", "gs://", "pipe:", "hf://")


def expand_shards(data: str) -> list[str]:
    """Shard URLs from a brace pattern ('::' joins several), a prepared folder or its manifest.json;
    local shards must exist."""
    if not data or not data.strip():
        raise ValueError(
            "no training data: --data is empty; give WebDataset shard URL(s), e.g. "
            "'corpus/shard-{000000..000099}.tar', or a folder written by `emotionclip prepare`"
        )
    from emotionclip.shards.reader import expand_shard_urls

    urls = [u for u in expand_shard_urls(data.strip()) if u]
    if not urls:
        raise ValueError(f"{data}: the shard pattern expands to no shards")
    local = [u.removeprefix("file://") for u in urls if not u.startswith(_REMOTE_PREFIXES)]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(urls)} shards)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: training shard does not exist{more}")
    return urls


def check_clips_pass_filter(urls: list[str], config: TrainConfig, data: str = "") -> int:
    """With ``steps_per_epoch`` the loader resamples shards forever: if the neutral filter keeps no
    clip it would spin without ever yielding. Read the clips' metadata in shard order until a
    batch's worth pass (usually within the first shard) and fail with the "no batches" error if
    the whole corpus has fewer."""
    import json

    import webdataset as wds

    need, kept, seen = config.batch_size, 0, 0
    samples = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=wds.warn_and_continue)
    )
    for sample in samples:
        seen += 1
        try:
            neutral = float(json.loads(sample["json"])["neutral"])
        except (KeyError, TypeError, ValueError):
            continue  # the loader skips such samples too
        kept += neutral <= config.neutral_threshold
        if kept >= need:
            return kept
    raise ValueError(
        f"{data or urls[0]}: the training data gives no batches: {kept} of {seen} clips pass the neutral "
        f"filter (--neutral-threshold {config.neutral_threshold}), fewer than batch_size={need}; "
        "with --steps-per-epoch the loader would wait for them forever"
    )


def shard_batch_source(urls: list[str], config: TrainConfig, env: DistEnv, image_size: int) -> BatchSource:
    """Batches from prepared shards. With ``steps_per_epoch`` the shards are resampled and every rank
    yields exactly that many batches; without it an epoch is one pass over the shards."""
    from emotionclip.shards.reader import make_train_loader

    def source(epoch: int):
        return make_train_loader(
            urls,
            batch_size=config.batch_size,
            num_workers=config.workers,
            video_len=config.video_len,
            image_size=image_size,
            resize=round(image_size * 256 / 224),
            resampled=config.steps_per_epoch is not None,
            epoch_batches=config.steps_per_epoch,
            max_neutral=config.neutral_threshold,
            seed=config.seed + epoch,  # a new shard order each epoch
            rank=env.rank,
            world_size=env.world_size,
            pin_memory=env.device.type == "cuda",
        )

    return source


class EpochBatches:
    """One epoch's batches, fetched under a private torch RNG stream seeded by (seed, epoch, rank)."""

    def __init__(self, source: BatchSource, epoch: int, seed: int, rank: int, skip: int = 0):
        self._state = torch.Generator().manual_seed(hash((seed, epoch, rank)) % 2**63).get_state()
        with self._data_rng():
            self._batches = iter(source(epoch))
        if skip:
            logger.info("skipping the %d batches of epoch %d trained before the resume", skip, epoch)
        for _ in range(skip):  # trained on before the resume
            if self.next() is None:
                break

    @contextlib.contextmanager
    def _data_rng(self):
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self._state)
            yield
            self._state = torch.get_rng_state()

    def next(self) -> dict[str, torch.Tensor] | None:
        """The next batch, or None at the end of the epoch."""
        with self._data_rng():
            return next(self._batches, None)
