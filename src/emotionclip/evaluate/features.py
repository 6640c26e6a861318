"""Frozen-feature extraction for the benchmarks, batched, prefetched, with progress and a cache.

Protocol of the release: per clip the model's ``video_len`` frames at ``np.linspace(first, last, T,
dtype=int)`` of its frame numbers (first and last included), or one frame repeated (LIRIS-ACCEDE);
short side 256 bicubic + centre crop 224, ImageNet statistics, the subject mask transformed with the
pixels; images (Emotic) resize 224 + centre crop. Features are L2-normalised. The steps are named:
:func:`plan_frames`, :func:`decode_sample` (in prefetch threads, with the transform when the boxes
are known), the detector (main thread), ``_Encoder`` (batches at the protocol's precision) and
``_Results`` (resumable partial saves). The cache file name holds the checkpoint's SHA-256, the
dataset, split and a hash of the protocol (precision included), so a second probe run never touches
the model; an interrupted extraction resumes from its last partial save. A job split into parts
(:mod:`emotionclip.jobs`) extracts each slice into its own file; :func:`assemble_parts` joins them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write
from .._prefetch import prefetch
from ..constants import BOX_SCORE_THRESHOLD
from ..detect import as_boxes, track_boxes
from ..jobs import Part
from ..precision import autocast, check_precision
from ..pretrained import resolve_checkpoint
from ..runner import Runner, as_runner
from ..transform import FrameTransform, boxes_to_mask
from ..video_io import load_image, probe_video, read_frames_at
from .datasets import Sample, Split

logger = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when extraction changes in a way the protocol fields do not show


@dataclass(frozen=True)
class Protocol:
    num_frames: int = 8
    image_size: int = 224
    video_resize: int = 256
    image_resize: int = 224
    detector: str | None = None
    # detector boxes followed through a sample's frames (emotionclip.detect.track); False: each frame
    # alone, as the release
    track: bool = True
    score_threshold: float = BOX_SCORE_THRESHOLD
    precision: str = "fp32"  # emotionclip.precision name; bf16 and fp32 features differ, so it keys the cache
    backend: str = "torch"  # emotionclip.backends: an ONNX Runtime / OpenVINO run keys its own entries

    def key(self) -> str:
        fields = asdict(self)
        if fields["backend"] == "torch":  # keys of torch runs stay those of earlier versions
            del fields["backend"]
        if not fields["detector"]:  # no boxes to follow: the keys of earlier versions
            del fields["track"]
        text = json.dumps({**fields, "version": CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Features:
    keys: list[str]
    features: np.ndarray  # [N, D] float32, L2-normalised
    failed: list[dict[str, str]]  # samples that could not be decoded: {"key", "path", "reason"}


def checkpoint_hash(path: str | Path) -> str:
    """SHA-256 of a checkpoint file, or of a model directory's files (names and contents)."""
    path = resolve_checkpoint(path)[0]  # also named weights and hf-hub: ids
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no checkpoint files")
    h = hashlib.sha256()
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else "").encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: savez would append ".npz"
        np.savez(fh, **arrays)


def _save_features(path: Path, feats: Features) -> None:
    _atomic_savez(
        path,
        keys=np.array(feats.keys, dtype=str),
        features=feats.features,
        failed=np.array(json.dumps(feats.failed)),
    )


def _load_features(path: Path) -> Features:
    with np.load(path, allow_pickle=False) as z:
        return Features(z["keys"].tolist(), z["features"].astype(np.float32), json.loads(str(z["failed"])))


class BoxCache:
    """Detector boxes per sample key (a JSON file), so the detector runs once per sample.

    ``also_read``: further box files to look boxes up in (a part's cache reads the split's too)."""

    def __init__(self, path: Path | None, also_read: tuple[Path, ...] = ()):
        self.path = path
        self.boxes: dict[str, list[np.ndarray]] = {}
        for file in (*also_read, path):
            if file is not None and file.is_file():
                raw = json.loads(file.read_text())
                self.boxes.update({k: [as_boxes(b, str(file)) for b in v] for k, v in raw.items()})

    def save(self) -> None:
        if self.path is not None and self.boxes:
            doc = {k: [b.round(2).tolist() for b in v] for k, v in self.boxes.items()}
            atomic_write(self.path, json.dumps(doc))


# ------------------------------------------------------------------------------------------------
# step 1: which frames of a sample


@dataclass(frozen=True)
class FramePlan:
    """The frames a video sample is seen through: ``index[k]`` is the video frame number of model
    frame ``k``; only the distinct ones are decoded (at ``times``) and ``expand`` maps them back."""

    index: np.ndarray  # [T] frame numbers
    times: list[float]  # distinct instants to decode, sorted
    expand: np.ndarray  # [T] position of each model frame among the decoded ones


def plan_frames(sample: Sample, num_frames: int, fps: float, video_frames: int) -> FramePlan:
    """The release's sampling: ``np.linspace(first, last, T, dtype=int)`` over the clip's frame
    numbers, first and last frame included (BoLD, MELD, MovieGraphs, whole videos); a sample with an
    ``instant`` (LIRIS-ACCEDE's annotated second) is that one frame, repeated ``T`` times."""
    fps = fps or 25.0
    if sample.instant is not None:
        frame = int(math.floor(sample.instant * fps + 1e-6))
        return FramePlan(np.full(num_frames, frame), [float(sample.instant)], np.zeros(num_frames, np.int64))
    first = sample.first_frame
    # a clip running past the end of the file stops at its last frame (the release truncated the one
    # such MovieGraphs clip it met, tt0388795 #207, by hand)
    last = video_frames - 1 if sample.last_frame is None else min(sample.last_frame, video_frames - 1)
    if first >= video_frames or last < first:
        raise ValueError(
            f"{sample.path}: clip frames {first}-{last} are empty or past the video's {video_frames} frames"
        )
    index = np.linspace(first, last, num_frames, dtype=int)
    distinct, expand = np.unique(index, return_inverse=True)
    # the middle of each frame's display interval: robust to timestamps a hair off k / fps
    return FramePlan(index, [(int(f) + 0.5) / fps for f in distinct], expand.astype(np.int64))


# ------------------------------------------------------------------------------------------------
# step 2: decoding (in the prefetch workers)


@dataclass
class _Decoded:
    frames: np.ndarray  # [U, H, W, 3] uint8: the distinct frames (one for an image)
    plan: FramePlan | None  # None for an image
    boxes: list[np.ndarray] | None  # per distinct frame; None = ask the detector


def decode_sample(sample: Sample, num_frames: int) -> _Decoded:
    """The distinct frames of ``sample`` and, when the dataset gives them, their subject boxes."""
    if sample.kind == "image":
        image = load_image(sample.path)
        boxes = np.zeros((0, 5), np.float32)
        if sample.box is not None:
            w0, h0 = sample.box_frame_size or (image.shape[1], image.shape[0])
            sx, sy = image.shape[1] / w0, image.shape[0] / h0
            x1, y1, x2, y2 = sample.box
            boxes = np.array([[x1 * sx, y1 * sy, x2 * sx, y2 * sy, 1.0]], np.float32)
        return _Decoded(image[None], None, [boxes])
    info = probe_video(sample.path)
    plan = plan_frames(sample, num_frames, info.fps, max(info.num_frames, 1))
    frames = read_frames_at(sample.path, plan.times)
    boxes = None
    if sample.frame_boxes is not None:
        empty = np.zeros((0, 5), np.float32)
        boxes = [sample.frame_boxes.get(int(f), empty) for f in np.unique(plan.index)]
    elif not sample.detect:
        boxes = [np.zeros((0, 5), np.float32)] * len(frames)
    return _Decoded(frames, plan, boxes)


class _Transforms:
    """Pixels + subject mask -> model input, as the protocol says (video and image sizes differ)."""

    def __init__(self, protocol: Protocol):
        self.video = FrameTransform(protocol.image_size, protocol.video_resize, train=False)
        self.image = FrameTransform(protocol.image_size, protocol.image_resize, train=False)
        self.threshold = protocol.score_threshold

    def __call__(self, decoded: _Decoded) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = decoded.frames.shape[1:3]
        masks = np.stack([boxes_to_mask(b, h, w, self.threshold) for b in decoded.boxes])
        if decoded.plan is None:
            return self.image(decoded.frames[0], masks[0])
        return self.video(decoded.frames[decoded.plan.expand], masks[decoded.plan.expand])


def _load(sample: Sample, num_frames: int, transforms: _Transforms, box_cache: BoxCache):
    """Worker step: decode, and transform when the boxes are known. Returns ``(sample, result)`` with
    the model inputs, a :class:`_Decoded` still waiting for the detector, or the exception."""
    try:
        decoded = decode_sample(sample, num_frames)
        if decoded.boxes is None:
            decoded.boxes = box_cache.boxes.get(sample.key)
            if decoded.boxes is None:
                return sample, decoded  # the detector runs in the main thread
        return sample, transforms(decoded)
    except Exception as e:  # reported per sample by the caller
        return sample, e


def _detect(sample: Sample, decoded: _Decoded, detector, box_cache: BoxCache, track: bool) -> None:
    if detector is None:
        decoded.boxes = [np.zeros((0, 5), np.float32)] * len(decoded.frames)
        return
    found = detector.detect(decoded.frames, video=sample.path, times=decoded.plan.times)
    if track:
        found = track_boxes(found)
    decoded.boxes = box_cache.boxes[sample.key] = [np.asarray(b, np.float32) for b in found]


# ------------------------------------------------------------------------------------------------
# step 3: encoding batches, step 4: results and the partial save


class _Encoder:
    """Collects model inputs into batches of one kind (video or image) and encodes them."""

    def __init__(self, runner: Runner, batch_size: int):
        self.runner, self.batch_size = runner, batch_size
        self.items: list[tuple[Sample, torch.Tensor, torch.Tensor]] = []

    def add(
        self, sample: Sample, pixels: torch.Tensor, mask: torch.Tensor
    ) -> list[tuple[list[str], np.ndarray]]:
        """Queue one sample; returns the batches this completed as ``(keys, features)``."""
        done = self.flush() if self.items and self.items[0][0].kind != sample.kind else []
        self.items.append((sample, pixels, mask))
        return done + (self.flush() if len(self.items) >= self.batch_size else [])

    def flush(self) -> list[tuple[list[str], np.ndarray]]:
        if not self.items:
            return []
        device = self.runner.device
        pixels = torch.stack([i[1] for i in self.items]).to(device, non_blocking=True)
        masks = torch.stack([i[2] for i in self.items]).to(device, non_blocking=True)
        encode = self.runner.encode_image if self.items[0][0].kind == "image" else self.runner.encode_video
        out = encode(pixels, masks)
        keys = [i[0].key for i in self.items]
        self.items = []
        return [(keys, F.normalize(out.float(), dim=-1).cpu().numpy())]


class _Results:
    """Features so far (resumed from ``partial_path``), failures, and the periodic partial save."""

    def __init__(self, partial_path: Path | None, save_every: int, box_cache: BoxCache, desc: str):
        self.path, self.save_every, self.box_cache, self.desc = partial_path, save_every, box_cache, desc
        done = Features([], np.zeros((0, 0), np.float32), [])
        if partial_path is not None and partial_path.is_file():
            done = _load_features(partial_path)
            logger.info(
                "%s: resuming from %s (%d samples done)",
                desc,
                partial_path,
                len(done.keys) + len(done.failed),
            )
        self.keys, self.failed = list(done.keys), list(done.failed)
        self.chunks = [done.features] if done.keys else []
        self.finished = set(self.keys) | {f["key"] for f in self.failed}
        self.since_save = 0

    def add(self, keys: list[str], features: np.ndarray) -> None:
        self.keys.extend(keys)
        self.chunks.append(features)
        self.since_save += len(keys)
        if self.path is not None and self.since_save >= self.save_every:
            _save_features(self.path, self.features())
            self.box_cache.save()
            self.since_save = 0

    def fail(self, sample: Sample, error: Exception) -> None:
        reason = str(error) if str(error).startswith(sample.path) else f"{sample.path}: {error}"
        logger.warning("%s: skipping %s: %s", self.desc, sample.key, reason)
        self.failed.append({"key": sample.key, "path": sample.path, "reason": reason})

    def features(self) -> Features:
        stacked = np.concatenate(self.chunks) if self.chunks else np.zeros((0, 0), np.float32)
        return Features(list(self.keys), stacked, list(self.failed))


def extract_features(
    model: torch.nn.Module | Runner,
    samples: list[Sample],
    protocol: Protocol,
    *,
    batch_size: int = 16,
    device: str | torch.device | None = None,
    detector=None,
    box_cache: BoxCache | None = None,
    num_workers: int = 2,
    partial_path: Path | None = None,
    save_every: int = 1024,
    desc: str = "features",
) -> Features:
    """Encode ``samples`` with the frozen model at ``protocol.precision`` on ``device`` (default: the
    model's; another device encodes with a copy), or with a runner of ``protocol.backend`` as it was
    built (:mod:`emotionclip.runner`). Undecodable samples are logged and listed in ``failed``; with
    ``partial_path`` progress is saved every ``save_every`` samples and resumed."""
    check_precision(protocol.precision)
    if any(s.detect for s in samples) and detector is None:
        logger.warning("%s: no person detector given; detector-boxed samples get an empty subject mask", desc)
    box_cache = box_cache or BoxCache(None)
    results = _Results(partial_path, save_every, box_cache, desc)
    todo = [s for s in samples if s.key not in results.finished]
    transforms = _Transforms(protocol)
    load = functools.partial(
        _load, num_frames=protocol.num_frames, transforms=transforms, box_cache=box_cache
    )
    # the protocol's precision is torch's; an exported graph's precision is in its backend name
    runner = as_runner(model, device, protocol.precision if protocol.backend == "torch" else None)
    autocast(runner.device, protocol.precision)  # refuses fp16 on the CPU before any decoding
    encoder = _Encoder(runner, batch_size)
    bar = tqdm(total=len(samples), initial=len(results.finished), desc=desc, unit="clip", dynamic_ncols=True)
    with bar:
        for sample, loaded in prefetch(todo, load, workers=num_workers, depth=max(2 * batch_size, 4)):
            bar.update(1)
            try:
                if isinstance(loaded, Exception):
                    raise loaded
                if isinstance(loaded, _Decoded):
                    _detect(sample, loaded, detector, box_cache, protocol.track)
                    loaded = transforms(loaded)
                batches = encoder.add(sample, *loaded)
            except Exception as e:  # one broken sample must not stop a benchmark run
                results.fail(sample, e)
                continue
            for keys, feats in batches:
                results.add(keys, feats)
        for keys, feats in encoder.flush():
            results.add(keys, feats)
    box_cache.save()
    return results.features()


def _cache_base(split: Split, protocol: Protocol, cache_dir: str | Path, ckpt_sha: str) -> Path:
    return Path(cache_dir) / split.dataset / f"{split.split}-{ckpt_sha[:16]}-{protocol.key()}"


def _part_file(base: Path, part: Part, suffix: str = ".npz") -> Path:
    return base.parent / f"{base.name}.{part.name}{suffix}"


def _box_file(
    split: Split, protocol: Protocol, cache_dir: str | Path, part: Part | None = None
) -> Path | None:
    if not protocol.detector:
        return None
    safe = hashlib.sha256((protocol.detector + ("" if protocol.track else ":frames")).encode()).hexdigest()[
        :10
    ]
    name = f"boxes-{split.split}-{safe}-{protocol.num_frames}f-v{CACHE_VERSION}"
    return Path(cache_dir) / split.dataset / (f"{name}.json" if part is None else f"{name}.{part.name}.json")


def _covers(feats: Features, samples: list[Sample]) -> bool:
    return {s.key for s in samples} <= set(feats.keys) | {f["key"] for f in feats.failed}


def _write_cache(
    base: Path, feats: Features, split: Split, protocol: Protocol, checkpoint, ckpt_sha: str
) -> None:
    _save_features(base.with_suffix(".npz"), feats)
    atomic_write(
        base.with_suffix(".json"),
        json.dumps(
            {
                "dataset": split.dataset,
                "split": split.split,
                "checkpoint": str(checkpoint),
                "checkpoint_sha256": ckpt_sha,
                "protocol": asdict(protocol),
                "samples": len(feats.keys),
                "failed": len(feats.failed),
            },
            indent=2,
        ),
    )


def cached_split(split: Split, protocol: Protocol, cache_dir: str | Path, ckpt_sha: str) -> Features | None:
    """The split's features if its cache holds every sample, else None."""
    path = _cache_base(split, protocol, cache_dir, ckpt_sha).with_suffix(".npz")
    feats = _load_features(path) if path.is_file() else None
    return feats if feats is not None and _covers(feats, split.samples) else None


def cached_features(
    split: Split,
    protocol: Protocol,
    cache_dir: str | Path,
    checkpoint: str | Path,
    load_model: Callable[[], Runner],
    *,
    ckpt_sha: str | None = None,
    detector=None,
    part: Part | None = None,
    batch_size: int = 16,
    num_workers: int = 2,
) -> Features | None:
    """Features of a split from the cache, extracting (and caching) them on a miss.

    ``load_model`` (returning the runner) is called only on a miss, so a fully cached run never builds the model. With
    ``part`` (a slice of a job split over processes, :mod:`emotionclip.jobs`) only that slice is
    extracted, into the part's own file; it returns None then unless the split's whole cache is
    there already. :func:`assemble_parts` makes the split's cache from the part files.
    """
    ckpt_sha = ckpt_sha or checkpoint_hash(checkpoint)
    base = _cache_base(split, protocol, cache_dir, ckpt_sha)
    whole = base.with_suffix(".npz")
    where = f"{split.dataset}/{split.split}" + (f" {part.name}" if part else "")
    feats = cached_split(split, protocol, cache_dir, ckpt_sha)
    if feats is not None:
        logger.info("%s: features from cache %s", where, whole)
        return feats
    samples = split.samples if part is None else part.select(split.samples)
    if part is not None and _part_file(base, part).is_file():
        if _covers(_load_features(_part_file(base, part)), samples):
            logger.info("%s: features of this part from cache %s", where, _part_file(base, part))
            return None
    partial = base.with_suffix(".partial.npz") if part is None else _part_file(base, part, ".partial.npz")
    if whole.is_file():
        logger.info("%s: cache %s misses samples; extracting the rest", where, whole)
        if not partial.is_file():  # an interrupted extraction of the rest keeps its progress
            _save_features(partial, _load_features(whole))
    box_file = _box_file(split, protocol, cache_dir)
    boxes = None
    if box_file is not None:
        # a part writes its own box file (merged by assemble_parts): parts never overwrite each other's
        boxes = (
            BoxCache(box_file)
            if part is None
            else BoxCache(_box_file(split, protocol, cache_dir, part), (box_file,))
        )
    feats = extract_features(
        load_model(),
        samples,
        protocol,
        detector=detector,
        box_cache=boxes,
        partial_path=partial,
        desc=where,
        batch_size=batch_size,
        num_workers=num_workers,
    )
    if part is None:
        _write_cache(base, feats, split, protocol, checkpoint, ckpt_sha)
    else:
        _save_features(_part_file(base, part), feats)
    partial.unlink(missing_ok=True)
    return feats if part is None else None


def assemble_parts(
    split: Split, protocol: Protocol, cache_dir: str | Path, checkpoint: str | Path, count: int, ckpt_sha: str
) -> tuple[Features | None, list[str]]:
    """``(features, [])``: the split's cache made from the files of the ``count`` parts of a job
    (:func:`cached_features` with ``part``), in the split's sample order as one process writes it;
    the part files are removed. ``(None, missing parts)`` while some part has not written its slice.
    Callers serialise this (one lock per cache folder)."""
    base = _cache_base(split, protocol, cache_dir, ckpt_sha)
    parts = Part(0, count).siblings()
    loaded, missing = [], []
    for p in parts:
        f = _part_file(base, p)
        feats = _load_features(f) if f.is_file() else None
        if feats is None or not _covers(feats, p.select(split.samples)):
            missing.append(p.name)
        loaded.append(feats)
    if missing:
        return None, missing
    rows = {k: row for f in loaded for k, row in zip(f.keys, f.features, strict=True)}
    failed = {e["key"]: e for f in loaded for e in f.failed}
    order = [s.key for s in split.samples]
    keys = [k for k in order if k in rows]
    whole = Features(
        keys,
        np.stack([rows[k] for k in keys]) if keys else np.zeros((0, 0), np.float32),
        [failed[k] for k in order if k in failed and k not in rows],
    )
    _write_cache(base, whole, split, protocol, checkpoint, ckpt_sha)
    box_file = _box_file(split, protocol, cache_dir)
    if box_file is not None:
        part_boxes = tuple(_box_file(split, protocol, cache_dir, p) for p in parts)
        BoxCache(box_file, part_boxes).save()
        for f in part_boxes:
            f.unlink(missing_ok=True)
    for p in parts:
        _part_file(base, p).unlink()
    logger.info(
        "%s/%s: features of %d parts assembled into %s",
        split.dataset,
        split.split,
        count,
        base.with_suffix(".npz"),
    )
    return whole, []
