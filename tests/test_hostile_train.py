"""`emotionclip train` used as a hostile-but-realistic user would: one test per case, each asserting
a clear error naming the file and the problem, or the right result."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from _train_util import make_batch, micro_backbone, tiny_config, write_shards
from emotionclip.cli import main
from emotionclip.train import TrainConfig, train
from emotionclip.train.checkpoint import ResumeError


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_shards(folder, n_shards=1, clips_per_shard=8), micro_backbone(folder)


def _args(corpus, run, *extra):
    pattern, backbone = corpus
    return [
        "train",
        *("--data", pattern, "--output", str(run), "--backbone", backbone, "--pretrained", "none"),
        *("--head-layers", "1", "--video-len", "4", "--batch-size", "4", "--workers", "0"),
        *("--device", "cpu", "--precision", "fp32", "--log-every", "1", "--warmup-steps", "0"),
        *extra,
    ]


def _env():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE", "RANK"))}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _logged_steps(run):
    return [int(line.split(",")[0]) for line in (run / "loss.csv").read_text().splitlines()[1:]]


def test_second_train_on_a_running_folder_is_refused_with_the_holders_pid(corpus, tmp_path, caplog):
    run = tmp_path / "run"
    first = subprocess.Popen(
        [sys.executable, "-m", "emotionclip", *_args(corpus, run, "--max-steps", "5000", "--epochs", "5000")],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 180
        while not ((run / "loss.csv").is_file() and len(_logged_steps(run)) >= 1):
            assert first.poll() is None and time.monotonic() < deadline, "first run did not start"
            time.sleep(0.05)
        caplog.set_level(logging.ERROR)
        assert main(_args(corpus, run, "--resume", "latest")) == 2
        assert f"{run}: is being written by pid {first.pid} (train)" in caplog.text
    finally:
        first.send_signal(signal.SIGTERM)  # checkpoints and stops
        first.wait(timeout=120)
    stopped_at = _logged_steps(run)[-1]
    resume = _args(corpus, run, "--resume", "latest", "--max-steps", str(stopped_at + 1), "--epochs", "5000")
    assert main(resume) == 0
    assert _logged_steps(run) == list(range(1, stopped_at + 2))  # one run's rows, not interleaved


def test_steps_per_epoch_with_no_clip_left_by_the_filter_stops_with_no_batches(corpus, tmp_path):
    # every clip has neutral 0.01: a threshold of 0.001 keeps none; the resampling loader would spin
    cmd = [*_args(corpus, tmp_path / "run", "--steps-per-epoch", "3", "--neutral-threshold", "0.001")]
    done = subprocess.run(
        [sys.executable, "-m", "emotionclip", *cmd], env=_env(), capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "gives no batches: 0 of 8 clips pass the filters (--neutral-threshold 0.001" in done.stderr
    assert corpus[0] in done.stderr and "Traceback" not in done.stderr


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_truncated_newest_checkpoint_latest_says_so_auto_falls_back(tmp_path, caplog):
    batches = lambda epoch: [make_batch(i, batch_size=4) for i in range(8)]  # noqa: E731
    cfg = tiny_config(tmp_path, batch_size=4, max_steps=3, save_every=1, keep_step_checkpoints=3)
    full = train(cfg, batches=batches)
    ckpts = full.checkpoint.parent
    _truncate(ckpts / "step-000000003.pt")  # a node died while the file system flushed it

    with pytest.raises(ResumeError) as e:
        train(TrainConfig.from_dict({"resume": "latest", "max_steps": 5}, base=cfg), batches=batches)
    message = str(e.value)
    assert message.startswith(str(ckpts / "step-000000003.pt")) and "cannot be read" in message
    assert str(ckpts / "step-000000002.pt") in message and "--resume auto" in message

    caplog.set_level(logging.WARNING)
    auto = train(TrainConfig.from_dict({"resume": "auto", "max_steps": 5}, base=cfg), batches=batches)
    assert "skipping" in caplog.text and "step-000000003.pt" in caplog.text
    assert auto.steps == [1, 2, 3, 4, 5]  # step 3 trained again after the fallback to step 2
    assert auto.losses[:2] == full.losses[:2] and auto.losses[2] == pytest.approx(full.losses[2], rel=1e-6)
    assert torch.load(ckpts / "step-000000005.pt", weights_only=True)["step"] == 5


def test_a_start_that_failed_before_step_one_can_be_retried(tmp_path):
    cfg = tiny_config(tmp_path, batch_size=4, max_steps=2)
    with pytest.raises(ValueError, match="no batches"):
        train(cfg, batches=lambda epoch: [])  # fails after the run folder and config.yaml were written
    assert (tmp_path / "run" / "config.yaml").is_file()
    retry = train(cfg, batches=lambda epoch: [make_batch(0, batch_size=4)] * 4)  # same command again
    assert retry.steps == [1, 2]


def test_non_finite_and_boolean_numbers_are_refused_at_config_time(corpus, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    assert main(_args(corpus, tmp_path / "run", "--lr-weights", "nan")) == 2
    assert "'lr_weights' must be a finite number, got nan" in caplog.text
    assert not (tmp_path / "run").exists()  # refused before anything was written
    yml = tmp_path / "run.yaml"
    yml.write_text("head_layers: true\n")
    with pytest.raises(ValueError, match=rf"{yml}: config key 'head_layers' must be int, got True"):
        TrainConfig.from_yaml(yml)
    with pytest.raises(ValueError, match="must be int, got True"):
        TrainConfig(head_layers=True)
    with pytest.raises(ValueError, match="finite"):
        TrainConfig.from_dict({"sentiment_scale": "inf"})
