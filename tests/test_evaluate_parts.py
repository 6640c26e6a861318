"""Evaluation split over processes (--part I/N, torchrun ranks) gives a single run's features and metrics."""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import emotionclip
import emotionclip.factory
from emotionclip.cli import main
from emotionclip.evaluate.features import _load_features
from evaluate_media import write_bold, write_meld


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A saved tiny model and a small BoLD with one undecodable training clip (a failed entry)."""
    root = tmp_path_factory.mktemp("evalparts")
    torch.manual_seed(0)
    ckpt = emotionclip.save_model(
        emotionclip.create_model("tiny", video_len=4, head_layers=1, head_heads=1, head_ffn=128),
        root / "model",
    )
    bold = root / "bold"
    write_bold(bold, n_train=12, n_val=6)
    corrupt = bold / "videos" / "997" / "corrupt.mp4" / "0001.mp4"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"not a video" * 50)
    (bold / "joints" / "997" / "corrupt.mp4").mkdir(parents=True)
    np.save(
        bold / "joints" / "997" / "corrupt.mp4" / "0001.npy",
        np.load(next(bold.joinpath("joints").rglob("*.npy"))),
    )
    table = pd.read_csv(bold / "annotations" / "train.csv", header=None)
    row = table.iloc[3].copy()
    row[0] = "997/corrupt.mp4/0001.mp4"
    # row 5: in part 1's slice of 2, so its failure must reach the assembled cache
    pd.concat([table.iloc[:5], row.to_frame().T, table.iloc[5:]]).to_csv(
        bold / "annotations" / "train.csv", header=False, index=False
    )
    return ckpt, bold


def _args(job, out):
    ckpt, bold = job
    return [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--dataset",
        "bold",
        "--root",
        str(bold),
        "--out",
        str(out),
        "--workers",
        "1",
        "--batch-size",
        "4",
    ]


def _outputs(out, cache=None):
    """The split caches (keys, features, failed) and the metrics JSON without timings and paths."""
    caches = {}
    for f in sorted(((cache or out / "feature_cache") / "bold").glob("*.npz")):
        caches[f.name] = _load_features(f)
    result = json.loads((out / "bold_metrics.json").read_text())
    for key in ("seconds", "probe_heads", "plots"):
        result.pop(key)
    return caches, result


# Features from processes with other thread counts (torchrun ranks run 1 thread) differ in the last
# bits with the reduction order of the CPU's kernels (4.8e-7 seen on an Intel Xeon with AMX).
FEATURE_ATOL = 1e-5


def _assert_same(a, b):
    caches_a, result_a = a
    caches_b, result_b = b
    assert list(caches_a) == list(caches_b) and len(caches_a) == 2  # train, val; no part files left
    for name, fa in caches_a.items():
        fb = caches_b[name]
        assert fa.keys == fb.keys, name
        np.testing.assert_allclose(fa.features, fb.features, atol=FEATURE_ATOL, err_msg=name)
        assert fa.failed == fb.failed, name
    metrics_a, metrics_b = result_a["metrics"], result_b["metrics"]
    assert {k: v for k, v in result_a.items() if k != "metrics"} == {
        k: v for k, v in result_b.items() if k != "metrics"
    }
    assert metrics_a.keys() == metrics_b.keys()
    for split in metrics_a:
        assert metrics_a[split] == pytest.approx(metrics_b[split], abs=1e-4), split


@pytest.fixture(scope="module")
def single(job, tmp_path_factory):
    out = tmp_path_factory.mktemp("single") / "out"
    assert main(_args(job, out)) == 0
    outputs = _outputs(out)
    assert outputs[1]["counts"]["train"]["failed"] == 1 and outputs[1]["counts"]["train"]["used"] == 12
    return outputs


@pytest.fixture
def one_process(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


def _no_model(*a, **k):
    raise AssertionError("the model was built although this part's features were cached")


def test_two_parts_equal_one_process_and_a_finished_part_reruns_as_a_no_op(
    job, single, tmp_path, monkeypatch, caplog, one_process
):
    out = tmp_path / "out"
    with caplog.at_level("INFO"):
        assert main([*_args(job, out), "--part", "1/2"]) == 0
    assert not (out / "bold_metrics.json").exists()
    part_files = sorted((out / "feature_cache" / "bold").glob("*.part-1-of-2.npz"))
    assert len(part_files) == 2 and not list(out.joinpath("feature_cache", "bold").glob("*partial*"))
    assert "waiting for train: part-0-of-2; val: part-0-of-2" in caplog.text
    # a rerun of the finished part: nothing extracted, the model never built, its files untouched
    stamps = [f.stat().st_mtime_ns for f in part_files]
    with monkeypatch.context() as m:
        m.setattr(emotionclip.factory, "load_model", _no_model)
        assert main([*_args(job, out), "--part", "1/2"]) == 0
    assert [f.stat().st_mtime_ns for f in part_files] == stamps
    assert not (out / "bold_metrics.json").exists()
    # the last part completes the set: caches assembled, part files removed, probes fitted
    assert main([*_args(job, out), "--part", "0/2"]) == 0
    _assert_same(_outputs(out), single)
    # every feature cached: the whole job again with --overwrite never builds the model, part 0 fits
    monkeypatch.setattr(emotionclip.factory, "load_model", _no_model)
    (out / "bold_metrics.json").unlink()
    assert main([*_args(job, out), "--part", "1/2"]) == 0  # no metrics there: the first part writes them
    _assert_same(_outputs(out), single)
    assert main([*_args(job, out), "--part", "1/2"]) == 2  # they exist: refused without --overwrite
    written = (out / "bold_metrics.json").stat().st_mtime_ns
    assert main([*_args(job, out), "--part", "1/2", "--overwrite", "--solver", "sklearn"]) == 0
    assert (out / "bold_metrics.json").stat().st_mtime_ns == written  # part 0 fits a fully cached job
    assert main([*_args(job, out), "--part", "0/2", "--overwrite", "--solver", "sklearn"]) == 0
    assert json.loads((out / "bold_metrics.json").read_text())["solver"] == "sklearn"


def test_killed_part_resumes_from_its_partial_save(job, single, tmp_path, caplog, one_process):
    from emotionclip.evaluate.features import (
        Protocol,
        _cache_base,
        _part_file,
        _save_features,
        checkpoint_hash,
        extract_features,
    )
    from emotionclip.evaluate.run import benchmark_splits as _splits
    from emotionclip.jobs import Part

    # what a part killed after its first partial save leaves: three of its training samples
    ckpt, bold = job
    train = _splits("bold", bold)["train"]
    part = Part(0, 2)
    protocol = Protocol(num_frames=4, detector=None)
    done = extract_features(
        emotionclip.load_model(ckpt), part.select(train.samples)[:3], protocol, num_workers=0
    )
    cache = tmp_path / "cache"
    _save_features(
        _part_file(_cache_base(train, protocol, cache, checkpoint_hash(ckpt)), part, ".partial.npz"), done
    )
    args = [*_args(job, tmp_path / "out"), "--cache-dir", str(cache)]
    with caplog.at_level("INFO"):
        assert main([*args, "--part", "0/2"]) == 0
    assert "part-0-of-2: resuming from" in caplog.text and "(3 samples done)" in caplog.text
    assert main([*args, "--part", "1/2"]) == 0
    _assert_same(_outputs(tmp_path / "out", cache), single)


@pytest.mark.multiprocess
def test_torchrun_two_processes_equal_one_process(job, single, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-port",
        "0",
        "-m",
        "emotionclip",
        *_args(job, tmp_path / "out"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # its own session: a hung run is killed with every rank it started
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        log, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        pytest.fail(f"torchrun did not finish in 300 s:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-3000:]
    assert (tmp_path / "out" / "bold_metrics.json").is_file(), log[-3000:]
    assert log.count("emotionclip.evaluate.outputs: wrote ") == 1  # one rank fitted the probes
    _assert_same(_outputs(tmp_path / "out"), single)


def test_parts_with_detector_boxes_merge_their_box_caches(job, tmp_path, one_process):
    from emotionclip.evaluate import evaluate

    ckpt, _ = job
    root, boxes = write_meld(tmp_path)
    kw = dict(detector=f"json:{boxes}", num_workers=1, batch_size=2)
    single = evaluate(ckpt, "meld", root, out_dir=tmp_path / "single", **kw)
    assert evaluate(ckpt, "meld", root, out_dir=tmp_path / "out", part="0/2", **kw)["pending"] == {
        s: ["part-1-of-2"] for s in ("train", "dev", "test")
    }
    cache = tmp_path / "out" / "feature_cache" / "meld"
    assert len(list(cache.glob("boxes-*.part-0-of-2.json"))) == 3  # a box file per part and split
    merged = evaluate(ckpt, "meld", root, out_dir=tmp_path / "out", part="1/2", **kw)
    assert merged["counts"] == single["counts"] and not list(cache.glob("*part-*"))
    one_cache = tmp_path / "single" / "feature_cache" / "meld"
    for split, n in (("train", 9), ("dev", 3), ("test", 3)):
        one = json.loads(next(one_cache.glob(f"boxes-{split}-*")).read_text())
        assert json.loads(next(cache.glob(f"boxes-{split}-*")).read_text()) == one and len(one) == n
        a, b = (_load_features(next(c.glob(f"{split}-*.npz"))) for c in (cache, one_cache))
        assert a.keys == b.keys
        np.testing.assert_allclose(a.features, b.features, atol=FEATURE_ATOL)


def test_rank_device_gives_each_launched_process_its_own_gpu(monkeypatch):
    from emotionclip.jobs import rank_device

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    assert rank_device("cuda") == "cuda"  # one process: as given
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert rank_device("cuda") == "cuda:1"  # 4 processes on 2 GPUs: two each
    assert rank_device("cuda:0") == "cuda:0" and rank_device("cpu") == "cpu"  # chosen explicitly
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_LOCALID", "2")
    assert rank_device("cuda") == "cuda:0"


def test_parts_with_an_inference_backend_equal_one_process(job, tmp_path, monkeypatch, one_process):
    monkeypatch.setenv("EMOTIONCLIP_CACHE", str(tmp_path / "exports"))  # the ONNX export goes here
    args = ["--backend", "onnxruntime"]
    assert main([*_args(job, tmp_path / "single"), *args]) == 0
    for part in ("1/2", "0/2"):
        assert main([*_args(job, tmp_path / "out"), *args, "--part", part]) == 0
    single = _outputs(tmp_path / "single")
    assert single[1]["protocol"]["backend"] == "onnxruntime-fp32"
    _assert_same(_outputs(tmp_path / "out"), single)
