"""prepare's overlapped pipeline (decode ahead of a threaded detector) against a one-stage-at-a-time
reference: the same samples, texts, frames (JPEG bytes) and boxes."""

from __future__ import annotations

import io
import json
import tarfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emotionclip.detect import track_boxes
from emotionclip.detect.movenet import MoveNetPersonDetector
from emotionclip.prepare import ClipFilter, PrepareConfig, prepare
from emotionclip.video_io import iter_frames, read_frames_at
from prepare_support import KeywordScorer

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "emotionclip" / "sample_media"


def _shard_samples(out: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = defaultdict(dict)
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                samples[key][ext] = tar.extractfile(m).read()
    return samples


def _jpeg(frame: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def test_threaded_movenet_gives_the_sequential_boxes():
    frames = read_frames_at(SAMPLES / "friday.mp4", [0.5 + 0.4 * k for k in range(13)], short_side=256)
    threaded = MoveNetPersonDetector(num_threads=3).detect(frames)
    sequential = MoveNetPersonDetector(num_threads=1).detect(frames)
    assert len(threaded) == len(sequential) == len(frames)
    assert sum(len(b) for b in sequential) >= len(frames)  # friday has people in every frame
    for a, b in zip(threaded, sequential):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-3)


def _prepare_and_check(tmp_path, rows, config: PrepareConfig, reference) -> dict:
    """prepare ``rows``, then check every sample against a one-stage-at-a-time reference: each clip
    decoded alone (its own seek, ``iter_frames``), JPEG-encoded, detected in one call and tracked."""
    manifest = tmp_path / "media.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rules = config.filter
    summary = prepare(manifest, tmp_path / "out", config)
    samples = _shard_samples(tmp_path / "out")
    assert summary["clips_written"] == len(samples) >= 3

    for key, members in samples.items():
        meta = json.loads(members["json"])
        first, stop, expected = rules.frame_range(meta["start"], meta["end"])
        decoded = list(iter_frames(meta["video"], first, stop, fps=rules.fps, short_side=config.short_side))
        times = [round(t, 3) for t, _ in decoded]
        frames = np.stack([f for _, f in decoded])
        assert meta["frame_times"] == times, key
        assert (meta["height"], meta["width"]) == frames.shape[1:3]
        jpgs = sorted(ext for ext in members if ext.endswith(".jpg"))
        assert len(jpgs) == len(frames), key
        for ext, frame in zip(jpgs, frames):
            assert members[ext] == _jpeg(frame, config.jpeg_quality), f"{key}.{ext}"
        if reference is None:
            want = [np.zeros((0, 5), np.float32)] * len(frames)
        else:
            want = track_boxes(reference.detect(frames, video=meta["video"], times=times))
        got = json.loads(members["boxes.json"])
        assert len(got) == len(want)
        for g, w in zip(got, want):
            g = np.asarray(g, np.float32).reshape(-1, np.shape(w)[1] if len(w) else 5)
            assert g.shape == np.shape(w), key
            np.testing.assert_allclose(g, np.asarray(w), rtol=0, atol=0.02)
        assert members["txt"].decode() == meta["text"]
        with_person = [bool(len(w) and (np.asarray(w)[:, 4] > rules.person_score).any()) for w in want]
        assert meta["has_person"] == pytest.approx(float(np.mean(with_person)), abs=1e-4)
    return samples


RULES = ClipFilter(min_duration=1.5, max_neutral=None, min_person_fraction=0.0)


def test_prepare_matches_a_one_stage_at_a_time_reference(tmp_path):
    rows = [{"video": str(SAMPLES / "friday.mp4"), "subtitle": str(SAMPLES / "friday.vtt")}]
    rows += [
        {"video": str(p), "text": "Don't forget a jacket"} for p in sorted((SAMPLES / "cremad").glob("*.flv"))
    ]
    config = PrepareConfig(scorer=KeywordScorer(), filter=RULES, workers=0)
    # one call on the whole clip, one frame at a time
    _prepare_and_check(tmp_path, rows, config, MoveNetPersonDetector(num_threads=1))


def test_prepare_popeye_clips_decoded_together_match_their_own_seeks(media_dir, tmp_path):
    """Popeye: several clips of one long-GOP HEVC video (CRA key frames 2.4-10 s apart, open GOP),
    decoded in shared passes: each clip's JPEG bytes equal those of its own seek's frames."""
    popeye = media_dir / "popeye"
    rows = [{"video": str(popeye / "T03-4_pgs.mkv"), "subtitle": str(popeye / "popeye_p1.eng.srt")}]
    config = PrepareConfig(detector="none", scorer=KeywordScorer(), filter=RULES, short_side=128, workers=0)
    samples = _prepare_and_check(tmp_path, rows, config, None)
    assert len(samples) >= 5
