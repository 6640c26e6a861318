"""`emotionclip train` end to end on shards written with the prepare stage's own shard writer."""

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import emotionclip
from _train_util import micro_backbone, write_shards
from emotionclip.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return write_shards(folder, n_shards=2, clips_per_shard=8), micro_backbone(folder)


def _args(corpus, run: Path, *extra: str) -> list[str]:
    pattern, backbone = corpus
    return [
        "train",
        "--data",
        pattern,
        "--output",
        str(run),
        "--backbone",
        backbone,
        "--pretrained",
        "none",
        "--head-layers",
        "1",
        "--video-len",
        "4",
        "--batch-size",
        "4",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--log-every",
        "1",
        "--warmup-steps",
        "0",
        "--lr-gain-bias",
        "1e-3",
        "--lr-weights",
        "1e-3",
        *extra,
    ]


def test_cli_trains_from_shards(corpus, tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO, logger="emotionclip.train")
    run = tmp_path / "run"
    assert main(_args(corpus, run, "--max-steps", "3", "--save-every", "2")) == 0
    assert "trained to step 3" in capsys.readouterr().out
    configs = [r.getMessage() for r in caplog.records if "resolved training config" in r.getMessage()]
    assert len(configs) == 1 and "lr_gain_bias: 0.001" in configs[0]  # logged once, not printed
    saved = (run / "config.yaml").read_text()
    assert f"data: {corpus[0]}" in saved and "batch_size: 4" in saved and "beta1: 0.98" in saved
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "step-000000002.pt",
        "step-000000003.pt",
    ]
    assert (
        list((run / "tensorboard").glob("events.out.tfevents.*")) and (run / "loss.png").stat().st_size > 1000
    )
    assert (run / "loss.csv").read_text().splitlines()[0] == "step,epoch,loss"
    model = emotionclip.load_model(run / "checkpoints" / "step-000000003.pt")
    assert model.image_size == 64 and model.video_len == 4

    # a second epoch pass of 16 clips / batch 4 = 4 steps per epoch: resume to the end of epoch 1
    assert main(_args(corpus, run, "--resume", "latest", "--epochs", "2")) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["epoch-000.pt", "epoch-001.pt", "step-000000004.pt", "step-000000008.pt"]


def test_cli_bad_input_is_a_message_not_a_traceback(corpus, tmp_path, caplog):
    caplog.set_level(logging.ERROR)
    missing = str(Path(corpus[0]).parent / "shard-{000000..000003}.tar")
    args = _args(corpus, tmp_path / "run")
    args[args.index("--data") + 1] = missing
    assert main(args) == 2
    assert "shard-000002.tar" in caplog.text and "not exist" in caplog.text

    yml = tmp_path / "bad.yaml"
    yml.write_text("batch_size: 4\nlearning_rate: 1e-3\n")
    assert main([*_args(corpus, tmp_path / "run"), "--config", str(yml)]) == 2
    assert "learning_rate" in caplog.text and "valid keys" in caplog.text
    assert main(_args(corpus, tmp_path / "run", "--resume", "latest")) == 2
    assert "no checkpoint" in caplog.text
    assert not (tmp_path / "run").exists()


def test_sigkill_mid_run_then_resume_latest(corpus, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "SLURM_NTASKS")}
    env["OMP_NUM_THREADS"] = "2"
    cmd = [
        sys.executable,
        "-m",
        "emotionclip",
        *_args(corpus, run, "--max-steps", "500", "--save-every", "1", "--epochs", "500"),
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while not (ckpts.is_dir() and any(p.name >= "step-000000003.pt" for p in ckpts.glob("step-*.pt"))):
            assert proc.poll() is None, "training exited before it could be killed"
            assert time.time() < deadline, "no checkpoint after 180 s"
            time.sleep(0.05)
        time.sleep(0.3)  # land somewhere inside a step or a checkpoint write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    survivors = sorted(ckpts.glob("step-*.pt"))
    for path in survivors:  # every checkpoint under a final name is complete
        assert torch.load(path, weights_only=True)["step"] == int(path.stem.split("-")[1])
    killed_at = int(survivors[-1].stem.split("-")[1])

    assert (
        main(_args(corpus, run, "--resume", "latest", "--max-steps", str(killed_at + 3), "--epochs", "500"))
        == 0
    )
    assert not list(ckpts.glob(".*tmp*"))  # partial files of the killed writer are gone
    steps = [int(line.split(",")[0]) for line in (run / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(1, killed_at + 4))  # no gap, no duplicate after the kill
    assert torch.load(ckpts / f"step-{killed_at + 3:09d}.pt", weights_only=True)["step"] == killed_at + 3


def test_eval_bold_probes_bold_val_at_each_epoch_end(corpus, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from evaluate_media import write_bold

    bold_root = tmp_path / "bold"
    write_bold(bold_root, n_train=16, n_val=8)
    run = tmp_path / "run"
    # 16 clips, batch 4: 4 steps per epoch; --eval-every 0: epoch ends only, as the release
    assert main(_args(corpus, run, "--epochs", "2", "--eval-every", "0", "--eval-bold", str(bold_root))) == 0
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    for metric in ("mAP", "AUC"):
        values = events.Scalars(f"eval/bold/val/{metric}")
        assert [e.step for e in values] == [4, 8]
        assert all(0 < e.value <= 100 for e in values)

    # a BoLD root that is not one stops before any training, with the path in the message
    assert main(_args(corpus, tmp_path / "run2", "--eval-bold", str(tmp_path / "nothing"))) == 2
    assert not (tmp_path / "run2" / "checkpoints").exists()
