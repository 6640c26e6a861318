"""Frozen-feature extraction for the benchmarks, batched, with progress and an on-disk cache.

Protocol of the release: ``num_frames`` instants uniformly over each clip (the model's
``video_len``, 8 for the released model), short side 256 bicubic + centre crop 224, ImageNet
statistics, the subject mask transformed with the pixels; images (Emotic) resize 224 + centre crop.
Features are L2-normalised. The cache file name holds the checkpoint's SHA-256, the dataset, split
and a hash of the protocol, so a second probe run never touches the model; an interrupted
extraction resumes from its last partial save.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .._io import atomic_path, atomic_write
from ..pretrained import resolve_checkpoint
from ..transform import FrameTransform, boxes_to_mask
from ..video_io import probe_video, read_frames_at, uniform_times
from .datasets import Sample, Split

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when extraction changes in a way the protocol fields do not show


@dataclass(frozen=True)
class Protocol:
    num_frames: int = 8
    image_size: int = 224
    video_resize: int = 256
    image_resize: int = 224
    detector: str | None = None
    score_threshold: float = 0.5

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": CACHE_VERSION}, sort_keys=True)
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
    """Detector boxes per sample key (a JSON file), so the detector runs once per sample."""

    def __init__(self, path: Path | None):
        self.path = path
        self.boxes: dict[str, list[np.ndarray]] = {}
        if path is not None and path.is_file():
            raw = json.loads(path.read_text())
            self.boxes = {k: [np.asarray(b, np.float32).reshape(-1, 5) for b in v] for k, v in raw.items()}

    def save(self) -> None:
        if self.path is not None and self.boxes:
            doc = {k: [b.round(2).tolist() for b in v] for k, v in self.boxes.items()}
            atomic_write(self.path, json.dumps(doc))


# ------------------------------------------------------------------------------------------------
# decoding one sample


@dataclass
class _Decoded:
    frames: np.ndarray  # [T, H, W, 3] uint8 (video) or [H, W, 3] (image)
    times: list[float]
    boxes: list[np.ndarray] | None  # per frame; None = ask the detector


def _decode(sample: Sample, num_frames: int) -> _Decoded:
    if sample.kind == "image":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(sample.path) as im:
                image = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as e:
            raise OSError(f"{sample.path}: cannot read image ({e})") from e
        boxes = np.zeros((0, 5), np.float32)
        if sample.box is not None:
            w0, h0 = sample.box_frame_size or (image.shape[1], image.shape[0])
            sx, sy = image.shape[1] / w0, image.shape[0] / h0
            x1, y1, x2, y2 = sample.box
            boxes = np.array([[x1 * sx, y1 * sy, x2 * sx, y2 * sy, 1.0]], np.float32)
        return _Decoded(image, [], [boxes])
    info = probe_video(sample.path)
    end = info.duration if sample.end is None else min(sample.end, info.duration)
    if not end > sample.start:
        raise ValueError(
            f"{sample.path}: clip [{sample.start:.2f}, {end:.2f}) s is empty (video lasts {info.duration:.2f} s)"
        )
    times = uniform_times(sample.start, end, num_frames)
    frames = read_frames_at(sample.path, times)
    boxes = None
    if sample.frame_boxes is not None:
        empty = np.zeros((0, 5), np.float32)
        fps = info.fps or 25.0
        boxes = [sample.frame_boxes.get(int(math.floor(t * fps + 1e-6)), empty) for t in times]
    elif not sample.detect:
        boxes = [np.zeros((0, 5), np.float32)] * len(times)
    return _Decoded(frames, times, boxes)


def _bounded_map(fn: Callable, items: list, workers: int, ahead: int) -> Iterator:
    """``map`` in a thread pool that keeps at most ``ahead`` results pending (bounded memory).
    Yields ``(item, result_or_exception)``."""

    def safe(item):
        try:
            return fn(item)
        except Exception as e:  # reported per item by the caller
            return e

    if workers <= 0:
        for item in items:
            yield item, safe(item)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        it = iter(items)
        for item in it:
            pending.append((item, pool.submit(safe, item)))
            if len(pending) >= ahead:
                done_item, fut = pending.popleft()
                yield done_item, fut.result()
        while pending:
            done_item, fut = pending.popleft()
            yield done_item, fut.result()


# ------------------------------------------------------------------------------------------------
# extraction


@torch.no_grad()
def extract_features(
    model: torch.nn.Module,
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
    """Encode ``samples`` with the frozen model. Undecodable samples are logged and listed in
    ``failed``; with ``partial_path`` progress is saved every ``save_every`` samples and resumed."""
    if any(s.detect for s in samples) and detector is None:
        logger.warning("%s: no person detector given; detector-boxed samples get an empty subject mask", desc)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    video_tf = FrameTransform(protocol.image_size, protocol.video_resize, train=False)
    image_tf = FrameTransform(protocol.image_size, protocol.image_resize, train=False)
    box_cache = box_cache or BoxCache(None)

    done = Features([], np.zeros((0, 0), np.float32), [])
    if partial_path is not None and partial_path.is_file():
        done = _load_features(partial_path)
        logger.info(
            "%s: resuming from %s (%d samples done)", desc, partial_path, len(done.keys) + len(done.failed)
        )
    finished = set(done.keys) | {f["key"] for f in done.failed}
    todo = [s for s in samples if s.key not in finished]
    keys, chunks, failed = list(done.keys), [done.features] if len(done.keys) else [], list(done.failed)
    batch: list[tuple[Sample, torch.Tensor, torch.Tensor]] = []
    since_save = 0

    def flush():
        nonlocal since_save
        if not batch:
            return
        pixels = torch.stack([b[1] for b in batch]).to(device)
        masks = torch.stack([b[2] for b in batch]).to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            encode = model.encode_image if batch[0][0].kind == "image" else model.encode_video
            out = encode(pixels, masks)
        chunks.append(F.normalize(out.float(), dim=-1).cpu().numpy())
        keys.extend(b[0].key for b in batch)
        since_save += len(batch)
        batch.clear()
        if partial_path is not None and since_save >= save_every:
            _save_features(partial_path, Features(keys, np.concatenate(chunks), failed))
            box_cache.save()
            since_save = 0

    def to_inputs(sample: Sample, decoded: _Decoded) -> tuple[torch.Tensor, torch.Tensor]:
        frames = decoded.frames
        h, w = frames.shape[-3:-1]
        masks = np.stack([boxes_to_mask(b, h, w, protocol.score_threshold) for b in decoded.boxes])
        return image_tf(frames, masks[0]) if sample.kind == "image" else video_tf(frames, masks)

    def prepare(sample: Sample):
        """Decode (and, when the boxes are known, transform) in a worker thread."""
        decoded = _decode(sample, protocol.num_frames)
        if decoded.boxes is None:
            cached = box_cache.boxes.get(sample.key)
            if cached is None:
                return decoded  # the detector runs in the main thread
            decoded.boxes = cached
        return to_inputs(sample, decoded)

    try:
        with tqdm(
            total=len(samples), initial=len(finished), desc=desc, unit="clip", dynamic_ncols=True
        ) as bar:
            for sample, result in _bounded_map(prepare, todo, num_workers, ahead=max(2 * batch_size, 4)):
                bar.update(1)
                try:
                    if isinstance(result, Exception):
                        raise result
                    if isinstance(result, _Decoded):
                        if detector is None:
                            result.boxes = [np.zeros((0, 5), np.float32)] * len(result.frames)
                        else:
                            found = detector.detect(result.frames, video=sample.path, times=result.times)
                            result.boxes = box_cache.boxes[sample.key] = [
                                np.asarray(b, np.float32) for b in found
                            ]
                        result = to_inputs(sample, result)
                    pixels, mask = result
                except Exception as e:  # one broken sample must not stop a benchmark run
                    reason = str(e) if str(e).startswith(sample.path) else f"{sample.path}: {e}"
                    logger.warning("%s: skipping %s: %s", desc, sample.key, reason)
                    failed.append({"key": sample.key, "path": sample.path, "reason": reason})
                    continue
                if batch and batch[0][0].kind != sample.kind:
                    flush()
                batch.append((sample, pixels, mask))
                if len(batch) >= batch_size:
                    flush()
            flush()
    finally:
        model.train(was_training)
    box_cache.save()
    features = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    return Features(keys, features, failed)


def cached_features(
    split: Split,
    protocol: Protocol,
    cache_dir: str | Path,
    checkpoint: str | Path,
    load_model: Callable[[], torch.nn.Module],
    *,
    ckpt_sha: str | None = None,
    detector=None,
    **kw,
) -> Features:
    """Features of a split from the cache, extracting (and caching) them on a miss.

    ``load_model`` is called only on a miss, so a fully cached run never builds the model.
    """
    ckpt_sha = ckpt_sha or checkpoint_hash(checkpoint)
    base = Path(cache_dir) / split.dataset / f"{split.split}-{ckpt_sha[:16]}-{protocol.key()}"
    path = base.with_suffix(".npz")
    if path.is_file():
        feats = _load_features(path)
        wanted = {s.key for s in split.samples}
        if wanted <= set(feats.keys) | {f["key"] for f in feats.failed}:
            logger.info("%s/%s: features from cache %s", split.dataset, split.split, path)
            return feats
        logger.info("%s/%s: cache %s misses samples; extracting the rest", split.dataset, split.split, path)
        _save_features(base.with_suffix(".partial.npz"), feats)
    boxes = None
    if protocol.detector:
        safe = hashlib.sha256(protocol.detector.encode()).hexdigest()[:10]
        boxes = BoxCache(
            Path(cache_dir) / split.dataset / f"boxes-{split.split}-{safe}-{protocol.num_frames}f.json"
        )
    feats = extract_features(
        load_model(),
        split.samples,
        protocol,
        detector=detector,
        box_cache=boxes,
        partial_path=base.with_suffix(".partial.npz"),
        desc=f"{split.dataset}/{split.split}",
        **kw,
    )
    _save_features(path, feats)
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
    base.with_suffix(".partial.npz").unlink(missing_ok=True)
    return feats
