"""Splitting embed / analyze over processes (--part I/N, torchrun ranks) gives a single run's outputs."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import emotionclip
from emotionclip._io import OutputDirError, claim_output_dir
from emotionclip.cli import main
from emotionclip.constants import SAMPLE_MEDIA
from emotionclip.jobs import Part, current_part, parse_part


def test_parts_are_deterministic_round_robin_slices(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parse_part("1/3") == Part(1, 3) and current_part(None) is None
    items = list(range(10))
    slices = [parse_part(f"{i}/3").select(items) for i in (0, 1, 2)]
    assert sorted(sum(slices, [])) == items and slices[0] == [0, 3, 6, 9]
    for bad in ("2/2", "-1/2", "1-2", "a/b"):
        with pytest.raises(ValueError, match="I/N"):
            parse_part(bad)
    # torchrun ranks split each part further: part 1/2 with 4 ranks, rank 1 -> slice 5 of 8
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert current_part("1/2") == Part(5, 8) and current_part(None) == Part(1, 4)


def test_parts_share_a_folder_but_not_a_part(tmp_path):
    with claim_output_dir(tmp_path / "o", "embed", part="part-0-of-2"):
        with claim_output_dir(tmp_path / "o", "embed", part="part-1-of-2"):
            pass
        with pytest.raises(OutputDirError, match=f"being written by pid {os.getpid()}"):
            with claim_output_dir(tmp_path / "o", "embed", part="part-0-of-2"):
                pass


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A saved tiny model and inputs: two videos (one pair with the same name), an image, a broken file."""
    root = tmp_path_factory.mktemp("job")
    torch.manual_seed(0)
    ckpt = emotionclip.save_model(emotionclip.create_model("tiny"), root / "model")
    inputs = root / "in"
    (inputs / "a").mkdir(parents=True)
    (inputs / "b").mkdir()
    shutil.copy(SAMPLE_MEDIA / "cremad" / "1001_DFA_ANG_XX.flv", inputs / "a" / "clip.flv")
    shutil.copy(SAMPLE_MEDIA / "cremad" / "1001_DFA_HAP_XX.flv", inputs / "b" / "clip.flv")
    shutil.copy(SAMPLE_MEDIA / "flower.mp4", inputs / "b" / "flower.mp4")
    from PIL import Image

    Image.fromarray(np.full((64, 48, 3), 120, np.uint8)).save(inputs / "a" / "face.png")
    (inputs / "b" / "broken.mp4").write_bytes(b"not a video")
    return ckpt, inputs


def _embed(job, out, *extra):
    ckpt, inputs = job
    args = ["embed", str(inputs), "--checkpoint", str(ckpt), "--out", str(out), "--detector", "none"]
    return main([*args, "--window", "1", "--stride", "1", *extra])


def _outputs(out):
    arrays = {}
    for f in sorted(out.glob("*.npz")):
        with np.load(f) as z:
            arrays[f.name] = {k: z[k] for k in z.files}
    summary = json.loads((out / "summary.json").read_text())
    for entry in summary["done"] + summary["skipped"]:
        entry["out"] = os.path.relpath(entry["out"], out)
    return arrays, summary


# Features from processes with other thread counts (torchrun's ranks run 1 thread, the single run 2)
# differ in the last bits: the reduction order of the matmuls changes with the thread count and the
# CPU's kernels (4.8e-7 seen on an Intel Xeon with AMX). Floats agree to FEATURE_ATOL, everything
# else (window times, boxes, names, counts) exactly.
FEATURE_ATOL = 1e-5


def _assert_same(a, b):
    arrays_a, summary_a = a
    arrays_b, summary_b = b
    assert arrays_a.keys() == arrays_b.keys() and len(arrays_a) == 4  # clip, clip-2, face, flower
    for name in arrays_a:
        assert arrays_a[name].keys() == arrays_b[name].keys(), name
        for k in arrays_a[name]:
            x, y = arrays_a[name][k], arrays_b[name][k]
            if k == "features":
                assert x.shape == y.shape and x.dtype == y.dtype, f"{name}:{k}"
                np.testing.assert_allclose(x, y, rtol=0, atol=FEATURE_ATOL, err_msg=f"{name}:{k}")
            else:
                np.testing.assert_array_equal(x, y, err_msg=f"{name}:{k}")
    assert summary_a == summary_b


@pytest.fixture(scope="module")
def single(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert _embed(job, out) == 1  # the broken file fails, the rest are done
    return _outputs(out)


def test_two_parts_equal_one_process(job, single, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    out = tmp_path / "out"
    _embed(job, out, "--part", "1/2")
    assert not (out / "summary.json").exists()  # part 0 has not finished yet
    _embed(job, out, "--part", "0/2")
    _assert_same(_outputs(out), single)
    # resumable: a part run again skips what it did (inputs 0, 2, 4: clip, broken, flower)
    _embed(job, out, "--part", "0/2")
    again = json.loads((out / "summary.json").read_text())
    assert [os.path.basename(e["input"]) for e in again["skipped"]] == ["clip.flv", "flower.mp4"]
    assert len(again["done"]) == 2 and len(again["failed"]) == 1  # part 1's run, and the broken file


def test_torchrun_ranks_equal_one_process(job, single, tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in ("1", "0"):
        monkeypatch.setenv("RANK", rank)
        _embed(job, out)
    _assert_same(_outputs(out), single)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_torchrun_two_processes(job, single, tmp_path):
    ckpt, inputs = job
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "0",
        "-m",
        "emotionclip",
        "embed",
        str(inputs),
        "--checkpoint",
        str(ckpt),
        "--out",
        str(tmp_path / "out"),
        "--detector",
        "none",
        "--window",
        "1",
        "--stride",
        "1",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert (tmp_path / "out" / "summary.json").is_file(), proc.stderr[-3000:]
    _assert_same(_outputs(tmp_path / "out"), single)


# ---- the analysis pipeline ---------------------------------------------------------------------


class _CountingDetector:
    """A real box source (a fixed box per frame) that records how it is called."""

    name = "counting"

    def __init__(self):
        import threading

        self.calls, self.threads, self.main = [], set(), threading.get_ident()

    def detect(self, frames, video=None, times=None):
        import threading

        self.calls.append(list(times))
        self.threads.add(threading.get_ident())
        h, w = frames.shape[1:3]
        return [np.array([[w * 0.2, h * 0.1, w * 0.8, h * 0.9, 0.9]], np.float32) for _ in frames]


def test_detection_is_batched_once_per_frame_and_off_the_main_thread():
    from emotionclip.analyze.windows import iter_windows, plan_windows
    from emotionclip.video_io import probe_video

    path = SAMPLE_MEDIA / "friday.mp4"
    info = probe_video(path)
    plan = plan_windows(info.duration, 2.0, 1.0, 8)
    det = _CountingDetector()
    piped = list(iter_windows(path, info, plan, det, short_side=128, detect_batch=16, workers=1))
    instants = [t for call in det.calls for t in call]
    assert sorted(instants) == sorted(set(instants))  # shared frames are detected once
    assert len(instants) == len(np.unique(plan.grid_index))
    assert max(map(len, det.calls)) == 16 and len(det.calls) == -(-len(instants) // 16)
    assert det.main not in det.threads  # the detector runs in the pipeline's own thread
    serial = list(iter_windows(path, info, plan, _CountingDetector(), short_side=128, workers=0))
    assert [w.index for w in piped] == list(range(len(plan)))
    for a, b in zip(piped, serial, strict=True):
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.times, b.times)
        assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes, strict=True))


class _TimeStampDetector:
    """One box per frame whose score field holds the frame's time: shows which frame it came from."""

    def __init__(self):
        self.times = []

    def detect(self, frames, *, video=None, times=None):
        self.times.extend(times)
        return [np.array([[1, 1, 5, 5, t]], np.float32) for t in times]


def test_detect_every_other_grid_frame_carries_the_boxes_forward():
    from emotionclip.analyze.windows import iter_windows, plan_windows
    from emotionclip.video_io import probe_video

    path = SAMPLE_MEDIA / "friday.mp4"
    info = probe_video(path)
    plan = plan_windows(info.duration, 2.0, 1.0, 8)
    grid = np.unique(plan.grid_index)
    det = _TimeStampDetector()
    windows = list(
        iter_windows(path, info, plan, det, short_side=96, detect_batch=5, workers=1, detect_every=2)
    )
    step = plan.grid_step
    assert np.allclose(det.times, (grid[::2] + 0.5) * step)  # every other grid frame, across batches
    for w in windows:
        for m, b in zip(w.grid, w.boxes, strict=True):
            detected_at = m - (m - grid[0]) % 2  # itself, or the frame just before it
            assert b[0, 4] == pytest.approx((detected_at + 0.5) * step)
    single = list(
        iter_windows(path, info, plan, _TimeStampDetector(), short_side=96, detect_batch=1, detect_every=2)
    )
    assert all(
        np.array_equal(x, y)
        for a, b in zip(windows, single, strict=True)
        for x, y in zip(a.boxes, b.boxes, strict=True)
    )  # batches of one frame: every other batch has nothing to detect
    with pytest.raises(ValueError, match="detect_every"):
        list(iter_windows(path, info, plan, det, detect_every=0))
