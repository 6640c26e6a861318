"""Training data from prepared shards: `make_train_loader(urls, ...)`.

Per clip: T frame indices drawn at random without replacement and sorted, only those JPEGs decoded,
short side resized to 256 and a random 224 crop per frame (the release's; ``crop="clip"``: one per
clip), applied to the subject mask alike; CLIP tokens. Batches are dicts ``{video [B,T,3,224,224]
uint8, video_mask [B,T,224,224] bool, tokens [B,77] long, sentiment_logits [B,7] float}`` plus
metadata lists (``key``, ``text``, ``video_id``, ``start``, ``end``, ``neutral``, ``has_person``) and
``skipped`` (clips of this batch replaced because they could not be read). Frames stay uint8 until
the training step normalises them on its device (`emotionclip.transform.normalize_frames`).

Two orders:
- ``order="uniform"`` (default, local shards): the release's ``DataLoader(shuffle=True)`` /
  ``DistributedSampler`` — every epoch a permutation of every clip of the corpus, split between
  ranks, read by random access into the tars. An index of the samples' byte ranges is built once
  by reading the tar headers (and cached when ``index_cache`` is given).
- ``order="stream"``: WebDataset streaming — shards in a shuffled order, split between ranks and
  loader workers, mixed through a ``shuffle_buffer`` of clips. Works for remote URLs; batches then
  hold few source videos (a shard holds whole videos in time order).
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections import Counter, OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from ..constants import BOX_SCORE_THRESHOLD
from ..detect.base import as_boxes
from ..tokenizer import tokenize
from ..transform import FrameTransform, PreprocessConfig, boxes_to_mask
from .index import BadSample, ShardIndex, build_index, read_meta, split_name, tar_members

logger = logging.getLogger(__name__)

META_FIELDS = ("key", "text", "video_id", "start", "end", "neutral", "has_person")
ORDERS = ("uniform", "stream")
_REMOTE = ("http://", "https://", "s3://", "gs://", "pipe:", "hf://")


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


# ---------------------------------------------------------------------------------------------
# decoding one sample
# ---------------------------------------------------------------------------------------------
class ClipDecoder:
    """Raw WebDataset sample (bytes per field) → training tensors (uint8 frames, bool mask)."""

    def __init__(
        self,
        video_len: int = 8,
        image_size: int = 224,
        resize: int = 256,
        person_score: float = BOX_SCORE_THRESHOLD,
        crop: str = "frame",
        decode: bool = True,
        preprocess: PreprocessConfig | None = None,
        text_truncation: str = "eot",
    ):
        self.video_len = video_len
        self.decode = decode
        self.text_truncation = text_truncation  # emotionclip.tokenizer.tokenize's truncation
        if preprocess is not None:  # the model's own sizes, interpolation and box-score threshold
            self.transform = FrameTransform.from_config(preprocess, train=True, crop=crop, normalize=False)
            person_score = preprocess.box_score_threshold
        else:
            self.transform = FrameTransform(
                image_size=image_size, resize=resize, train=True, crop=crop, normalize=False
            )
        self.person_score = person_score

    def frame_indices(self, n: int) -> torch.Tensor:
        if n >= self.video_len:
            return torch.randperm(n)[: self.video_len].sort().values
        return torch.randint(n, (self.video_len,)).sort().values  # short clip: repeat frames

    def __call__(self, sample: dict) -> dict:
        meta = read_meta(sample)
        where = f"{sample.get('__url__', '?')}: sample {sample.get('__key__', '?')}"
        out = {
            "key": sample["__key__"],
            **{k: meta.get(k) for k in ("video_id", "start", "end", "neutral", "has_person")},
        }
        if not self.decode:  # metadata only (batch-mixing measurements)
            return out
        frame_keys = sorted(k for k in sample if k.startswith("f") and k.endswith(".jpg"))
        if not frame_keys:
            raise BadSample(f"{where} has no frames")
        idx = self.frame_indices(len(frame_keys)).tolist()
        try:
            frames = np.stack(
                [np.asarray(Image.open(io.BytesIO(sample[frame_keys[i]])).convert("RGB")) for i in idx]
            )
            boxes = json.loads(sample["boxes.json"])
            h, w = frames.shape[1:3]
            masks = np.stack([boxes_to_mask(as_boxes(boxes[i]), h, w, self.person_score) for i in idx])
            text = sample["txt"].decode("utf-8")
        except (OSError, ValueError, KeyError, IndexError, TypeError, UnicodeDecodeError) as e:
            raise BadSample(f"{where}: {type(e).__name__}: {e}") from None
        pixels, mask = self.transform(frames, masks)
        return {
            **out,
            "video": pixels,
            "video_mask": mask.bool(),
            "tokens": tokenize([text], truncation=self.text_truncation)[0],
            "sentiment_logits": torch.tensor(meta["sentiment_logits"], dtype=torch.float32),
            "text": text,
        }


def collate(samples: list[dict]) -> dict:
    tensors = [k for k in ("video", "video_mask", "tokens", "sentiment_logits") if k in samples[0]]
    batch = {k: torch.stack([s[k] for s in samples]) for k in tensors}
    batch.update({k: [s.get(k) for s in samples] for k in META_FIELDS})
    batch["skipped"] = [r for s in samples for r in s.get("skipped", [])]
    return batch


class IndexedClips(torch.utils.data.Dataset):
    """Clip ``i`` of ``positions`` read by random access into its tar, decoded by ``decoder``.

    A clip that cannot be decoded is replaced by the next one of ``positions`` (as the release
    replaces it by another) and reported in the batch's ``skipped`` list."""

    def __init__(
        self,
        index: ShardIndex,
        positions: np.ndarray,
        decoder: ClipDecoder,
        max_open: int = 64,
        seed: int | None = None,
    ):
        self.index, self.positions, self.decoder = index, positions, decoder
        self.max_open = max_open
        self.seed = seed  # per-clip augmentation seed: a clip's crops do not depend on which worker or
        # which batches came before it, so a resume can skip batches without decoding them
        self._files: OrderedDict[int, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self.positions)

    def __getstate__(self):  # open files stay in the process that opened them
        return {**self.__dict__, "_files": OrderedDict()}

    def _file(self, shard: int):
        f = self._files.pop(shard, None)
        if f is None:
            f = open(self.index.urls[shard], "rb")  # noqa: SIM115 - kept open between samples
            if len(self._files) >= self.max_open:
                self._files.popitem(last=False)[1].close()
        self._files[shard] = f
        return f

    def raw_sample(self, pos: int) -> dict:
        ix = self.index
        shard = int(ix.shard[pos])
        f = self._file(shard)
        start, end = int(ix.start[pos]), int(ix.end[pos])
        f.seek(start)
        buf = io.BytesIO(f.read(end - start))
        sample = {"__url__": ix.urls[shard]}
        for name, data, size in tar_members(buf, 0, end - start):
            key, ext = split_name(name)
            sample["__key__"] = key
            buf.seek(data)
            sample[ext] = buf.read(size)
        return sample

    def __getitem__(self, item: int | tuple[int | None, int]) -> dict:
        seed, i = item if isinstance(item, tuple) else (self.seed, item)
        if seed is None:
            return self._clip(i)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(hash((seed, i)) % 2**63)
            return self._clip(i)

    def _clip(self, i: int) -> dict:
        skipped = []
        for k in range(min(16, len(self.positions))):
            pos = int(self.positions[(i + k) % len(self.positions)])
            try:
                clip = self.decoder(self.raw_sample(pos))
            except (BadSample, OSError) as e:
                logger.warning("%s; replaced by the next clip", e)
                skipped.append(str(e))
                continue
            clip["skipped"] = skipped
            return clip
        raise BadSample(f"{len(skipped)} clips in a row could not be read, e.g. {skipped[0]}")


def uniform_batches(
    n: int,
    batch_size: int,
    rank: int,
    world_size: int,
    seed: int,
    epoch: int,
    epoch_batches: int | None,
    drop_last: bool = True,
) -> list[list[int]]:
    """Per-rank batches of positions ``0..n-1``, as the release's shuffled DataLoader / DistributedSampler.

    Without ``epoch_batches``: one permutation per epoch, padded to a multiple of the ranks by
    repeating its start, every ``world_size``-th element from ``rank``, cut into full batches
    (and the partial last one unless ``drop_last``).
    With it: the epoch is the next ``epoch_batches * batch_size * world_size`` draws of an endless
    sequence of permutations, so every clip is seen once before any is seen twice.
    """
    if n == 0:
        return []

    def perm(k: int) -> np.ndarray:
        return np.random.default_rng([seed, k]).permutation(n)

    if epoch_batches is None:
        order = perm(epoch)
        per_rank = math.ceil(n / world_size)
        order = np.concatenate([order, order[: per_rank * world_size - n]])[rank::world_size]
        count = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    else:
        need = epoch_batches * batch_size * world_size
        first, last = epoch * need, (epoch + 1) * need  # positions in the endless sequence
        parts = [perm(k) for k in range(first // n, (last - 1) // n + 1)]
        order = np.concatenate(parts)[first - (first // n) * n :][:need][rank::world_size]
        count = epoch_batches
    return [order[b * batch_size : (b + 1) * batch_size].tolist() for b in range(count)]


class _EpochSampler:
    """The current epoch's batches as (augmentation seed, clip) items; iterated in the main process."""

    def __init__(self, batches: list[list[int]], seed: int | None):
        self.batches, self.seed = batches, seed

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter([[(self.seed, i) for i in batch] for batch in self.batches])


class UniformLoader:
    """One epoch of uniformly shuffled batches for this rank (a DataLoader over `IndexedClips`).

    `next_epoch` gives the same loader another epoch's batches: its worker processes persist
    (each item carries its epoch's augmentation seed, so the workers' copy of the dataset never
    changes)."""

    def __init__(self, dataset: IndexedClips, batches: list[list[int]], num_workers: int, pin_memory: bool):
        self.dataset = dataset
        self.sampler = _EpochSampler(batches, dataset.seed)
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=num_workers,
            collate_fn=collate,
            pin_memory=pin_memory,
            prefetch_factor=2 if num_workers else None,
            persistent_workers=num_workers > 0,
        )

    @property
    def batches(self) -> list[list[int]]:
        return self.sampler.batches

    def next_epoch(self, batches: list[list[int]], seed: int | None) -> UniformLoader:
        self.sampler.batches, self.sampler.seed = batches, seed
        return self

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        return iter(self.loader)


# ---------------------------------------------------------------------------------------------
# the loader
# ---------------------------------------------------------------------------------------------
_bad_in_stream: Counter = Counter()


def _meta_filter(max_neutral: float | None, min_has_person: float | None):
    def keep(sample: dict) -> bool:
        try:
            meta = read_meta(sample)
        except BadSample as e:
            _bad_in_stream["samples"] += 1
            logger.warning("%s; skipped (%d in this process so far)", e, _bad_in_stream["samples"])
            return False
        if max_neutral is not None and meta["neutral"] > max_neutral:
            return False
        return not min_has_person or meta["has_person"] >= min_has_person

    return keep


def _skip_bad(exn: Exception) -> bool:
    _bad_in_stream["samples"] += 1
    logger.warning("%s; skipped (%d in this process so far)", exn, _bad_in_stream["samples"])
    return True


@dataclass(frozen=True)
class LoaderSettings:
    """What a training loader delivers, the same every epoch (see :func:`make_train_loader`)."""

    batch_size: int
    num_workers: int = 0
    video_len: int = 8
    image_size: int = 224
    resize: int = 256
    order: str = "uniform"
    crop: str = "frame"
    shuffle_buffer: int = 500
    resampled: bool = False
    epoch_batches: int | None = None
    max_neutral: float | None = None
    min_has_person: float | None = None
    drop_last: bool = True
    seed: int = 0
    pin_memory: bool = False
    decode: bool = True
    preprocess: PreprocessConfig | None = None
    text_truncation: str = "eot"

    def __post_init__(self):
        if self.order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {self.order!r}")

    def decoder(self) -> ClipDecoder:
        return ClipDecoder(
            self.video_len,
            self.image_size,
            self.resize,
            crop=self.crop,
            decode=self.decode,
            preprocess=self.preprocess,
            text_truncation=self.text_truncation,
        )


def make_train_loader(
    urls: str | Path | list,
    settings: LoaderSettings | None = None,
    *,
    epoch: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    index: ShardIndex | None = None,
    index_cache: str | Path | None = None,
    skip_batches: int = 0,
    reuse: UniformLoader | None = None,
    **fields,
):
    """An iterable of ready-to-train batch dicts for one epoch (see module docstring).

    ``settings`` (a :class:`LoaderSettings`; keyword ``fields`` build one, or replace some of its
    fields) say what the loader delivers; the other arguments say which epoch, for which rank.

    ``order="uniform"``: a new permutation of every clip per (``seed``, ``epoch``), split between
    ranks (``rank``/``world_size`` or ``torch.distributed``); ``epoch_batches`` sets the batches per
    rank (else one pass over the corpus); ``len()`` is the number of batches. ``index`` reuses a
    `build_index` result. Remote URLs fall back to ``"stream"``.
    ``order="stream"``: shards shuffled with ``seed + epoch``, split between ranks then workers, clips
    mixed through ``shuffle_buffer`` (0 keeps shard order). ``resampled=True``: each rank/worker draws
    shards at random (seeded, the same on every run) and ``epoch_batches`` sets the batches per rank
    (rounded up to a multiple of the workers).
    ``max_neutral`` / ``min_has_person`` filter clips by their recorded scores. ``decode=False``
    yields metadata only. ``preprocess`` (a model's `PreprocessConfig`) replaces ``image_size`` /
    ``resize`` and brings its interpolation and box-score threshold. ``text_truncation``: how texts
    over 77 tokens are cut (:func:`emotionclip.tokenizer.tokenize`).
    ``skip_batches`` (uniform order; a resume mid-epoch) starts the epoch at
    that batch without reading the ones before: each clip's augmentation is seeded by (``seed``,
    ``epoch``, its place in the epoch), so the rest are the batches an uninterrupted epoch gives.
    ``reuse``: the `UniformLoader` of an earlier epoch with the same settings; it is given this
    epoch's batches and keeps its worker processes.
    """
    settings = replace(settings, **fields) if settings is not None else LoaderSettings(**fields)
    shard_urls = expand_shard_urls(urls)
    rank, world_size = _dist_rank_world(rank, world_size)
    decoder = settings.decoder()
    order = settings.order
    if order == "uniform" and any(u.startswith(_REMOTE) for u in shard_urls):
        logger.warning("remote shards cannot be read by random access: streaming them (order='stream')")
        order = "stream"
    if skip_batches and order != "uniform":
        raise ValueError("skip_batches needs order='uniform' (a stream is skipped by reading it)")
    s = settings
    if order == "uniform":
        index = index if index is not None else build_index(shard_urls, index_cache)
        positions = index.select(s.max_neutral, s.min_has_person)
        batches = uniform_batches(
            len(positions), s.batch_size, rank, world_size, s.seed, epoch, s.epoch_batches, s.drop_last
        )
        clip_seed = hash((s.seed, epoch)) % 2**63
        if reuse is not None:  # same data, filters and workers: keep its worker processes
            return reuse.next_epoch(batches[skip_batches:], clip_seed)
        clips = IndexedClips(index, positions, decoder, seed=clip_seed)
        return UniformLoader(clips, batches[skip_batches:], s.num_workers, s.pin_memory)
    return _stream_loader(shard_urls, s, decoder, s.seed + epoch, rank, world_size)


def _stream_loader(
    shard_urls: list[str], s: LoaderSettings, decoder: ClipDecoder, seed: int, rank: int, world_size: int
) -> wds.WebLoader:
    num_workers, shuffle_buffer, epoch_batches = s.num_workers, s.shuffle_buffer, s.epoch_batches
    readers = world_size * max(1, num_workers)
    if not s.resampled and len(shard_urls) < readers:
        logger.warning(
            "%d shards for %d readers (ranks x workers): some readers get no data; "
            "write smaller shards or use resampled=True",
            len(shard_urls),
            readers,
        )
    if s.resampled:
        # deterministic: the same shard draws on every run and every resume (seed per epoch and rank)
        stages = [wds.ResampledShards(shard_urls, seed=seed * 1000 + rank, deterministic=True)]
    else:
        stages = [wds.SimpleShardList(shard_urls)]
        if shuffle_buffer:
            stages.append(wds.detshuffle(bufsize=len(shard_urls), initial=len(shard_urls), seed=seed))
        stages += [_RankSplit(rank, world_size), wds.split_by_worker]
    stages.append(wds.tarfile_to_samples(handler=_skip_bad))
    if shuffle_buffer:
        # seeded so that a resumed run replays the same clip order (seed changes per epoch and rank)
        stages.append(
            wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 100), seed=seed * 100_003 + rank)
        )
    stages.append(wds.select(_meta_filter(s.max_neutral, s.min_has_person)))
    stages += [
        wds.map(decoder, handler=_skip_bad),
        wds.batched(s.batch_size, collation_fn=collate, partial=not s.drop_last),
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
        pin_memory=s.pin_memory,
    )


class _RankSplit:
    """Every ``world_size``-th shard from ``rank`` (after the rank-identical shard shuffle)."""

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, src):
        for k, item in enumerate(src):
            if k % self.world_size == self.rank:
                yield item
