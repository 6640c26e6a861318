"""Where training batches come from: prepared WebDataset shards via `emotionclip.shards.reader`.

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
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from ..transform import PreprocessConfig
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
    from ..shards.reader import expand_shard_urls

    urls = [u for u in expand_shard_urls(data.strip()) if u]
    if not urls:
        raise ValueError(f"{data}: the shard pattern expands to no shards")
    local = [u.removeprefix("file://") for u in urls if not u.startswith(_REMOTE_PREFIXES)]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more of {len(urls)} shards)" if len(missing) > 1 else ""
        raise FileNotFoundError(f"{missing[0]}: training shard does not exist{more}")
    return urls


def check_clips_pass_filter(urls: list[str], config: TrainConfig, index=None) -> int:
    """With ``steps_per_epoch`` the loader resamples shards forever: if the filters keep no clip it
    would spin without ever yielding. Count the kept clips (from the shard index, or by reading
    the clips' metadata in shard order until a batch's worth pass, usually within the first shard)
    and fail with the "no batches" error if the whole corpus has fewer."""
    import json

    import webdataset as wds

    need, kept, seen = config.batch_size, 0, 0
    if index is not None:
        kept, seen = len(index.select(config.neutral_threshold, config.min_person_fraction)), len(index)
        if kept >= need:
            return kept
        _raise_no_batches(urls, config, kept, seen)
    samples = wds.DataPipeline(
        wds.SimpleShardList(urls), wds.tarfile_to_samples(handler=wds.warn_and_continue)
    )
    for sample in samples:
        seen += 1
        try:
            meta = json.loads(sample["json"])
            neutral, person = float(meta["neutral"]), float(meta["has_person"])
        except (KeyError, TypeError, ValueError):
            continue  # the loader skips such samples too
        kept += neutral <= config.neutral_threshold and person >= config.min_person_fraction
        if kept >= need:
            return kept
    _raise_no_batches(urls, config, kept, seen)


def _raise_no_batches(urls: list[str], config: TrainConfig, kept: int, seen: int):
    raise ValueError(
        f"{config.data or urls[0]}: the training data gives no batches: {kept} of {seen} clips pass the "
        f"filters (--neutral-threshold {config.neutral_threshold}, --min-person-fraction "
        f"{config.min_person_fraction}), fewer than batch_size={config.batch_size}; with "
        "--steps-per-epoch the loader would wait for them forever"
    )


def shard_batch_source(
    urls: list[str],
    config: TrainConfig,
    env: DistEnv,
    preprocess: PreprocessConfig,
    video_len: int | None = None,
) -> BatchSource:
    """Batches from prepared shards, in the order ``config.data_order`` names (see
    `emotionclip.shards.reader`). With ``steps_per_epoch`` every rank yields exactly that many
    batches per epoch; without it an epoch is one pass over the corpus."""
    return _ShardSource(urls, config, env, preprocess, video_len or config.video_len)


class _ShardSource:
    def __init__(
        self, urls: list[str], config: TrainConfig, env: DistEnv, preprocess: PreprocessConfig, video_len: int
    ):
        from ..shards.index import build_index

        self.urls, self.config, self.env = urls, config, env
        self.preprocess, self.video_len = preprocess, video_len
        self._loader = None  # the uniform loader, reused from epoch to epoch
        local = not any(u.startswith(_REMOTE_PREFIXES) for u in urls)
        self.index = None
        if config.data_order == "uniform" and local:
            # every rank reads the tar headers once; the index is cached in the run folder for resumes
            cache = Path(config.output).expanduser() / "data-index.npz" if config.output else None
            self.index = build_index(urls, cache)
            kept = len(self.index.select(config.neutral_threshold, config.min_person_fraction))
            logger.info(
                "%d clips in %d shards, %d kept by the neutral/person filters, %d skipped as unreadable",
                len(self.index),
                len(urls),
                kept,
                len(self.index.skipped),
            )

    def check_enough_clips(self) -> int:
        return check_clips_pass_filter(self.urls, self.config, self.index)

    def steps_per_epoch(self) -> int | None:
        """Batches per rank and epoch when known before the epoch (the warm-up target needs it)."""
        cfg = self.config
        if cfg.steps_per_epoch:
            return cfg.steps_per_epoch
        if self.index is None:
            return None
        kept = len(self.index.select(cfg.neutral_threshold, cfg.min_person_fraction))
        return math.ceil(kept / self.env.world_size) // cfg.batch_size

    @property
    def skips_batches(self) -> bool:
        """Whether ``source(epoch, skip=n)`` starts at batch n without decoding the ones before."""
        return self.index is not None

    def __call__(self, epoch: int, skip: int = 0):
        from ..shards.reader import LoaderSettings, make_train_loader

        cfg = self.config
        settings = LoaderSettings(
            batch_size=cfg.batch_size,
            num_workers=cfg.workers,
            video_len=self.video_len,
            image_size=self.preprocess.crop_size,
            resize=self.preprocess.resize,
            order="uniform" if self.index is not None else "stream",
            crop=cfg.crop,
            resampled=cfg.steps_per_epoch is not None,
            epoch_batches=cfg.steps_per_epoch,
            max_neutral=cfg.neutral_threshold,
            min_has_person=cfg.min_person_fraction,
            seed=cfg.seed,
            pin_memory=self.env.device.type == "cuda",
            preprocess=self.preprocess,
            text_truncation=cfg.text_truncation,
        )
        loader = make_train_loader(
            self.urls,
            settings,
            epoch=epoch,  # a new order each epoch
            rank=self.env.rank,
            world_size=self.env.world_size,
            index=self.index,
            skip_batches=skip,
            reuse=self._loader,
        )
        if self.index is not None:
            self._loader = loader  # its workers persist into the next epoch
        return loader


class EpochBatches:
    """One epoch's batches, fetched under a private torch RNG stream seeded by (seed, epoch, rank)."""

    def __init__(self, source: BatchSource, epoch: int, seed: int, rank: int, skip: int = 0):
        self._state = torch.Generator().manual_seed(hash((seed, epoch, rank)) % 2**63).get_state()
        at_sample_level = skip and getattr(source, "skips_batches", False)
        with self._data_rng():
            self._batches = iter(source(epoch, skip=skip) if at_sample_level else source(epoch))
        if skip:
            how = "without reading them" if at_sample_level else "by reading them"
            logger.info("skipping the %d batches of epoch %d trained before the resume, %s", skip, epoch, how)
        for _ in range(0 if at_sample_level else skip):  # trained on before the resume
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
