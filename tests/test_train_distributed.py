"""DDP over gloo: two processes and one process on the same global batch give the same gradients."""

import os

import pytest
import torch
import torch.multiprocessing as mp

from _train_util import ddp_gradients, free_port
from emotionclip.train.distributed import init_distributed, world_info_from_env

pytestmark = pytest.mark.multiprocess


def test_two_process_gloo_matches_one_process(tmp_path, monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(var, raising=False)
    ddp_gradients(0, 1, 0, str(tmp_path), str(tmp_path / "one.pt"))
    mp.spawn(
        ddp_gradients, args=(2, free_port(), str(tmp_path), str(tmp_path / "two.pt")), nprocs=2, join=True
    )
    one = torch.load(tmp_path / "one.pt", weights_only=True)
    two = torch.load(tmp_path / "two.pt", weights_only=True)
    for local_loss in (False, True):
        a, b = one[local_loss], two[local_loss]
        assert set(a) == set(b) and "logit_scale" in a and "visual_head.frame_position_embedding.weight" in a
        for name in a:
            torch.testing.assert_close(
                b[name], a[name], rtol=1e-4, atol=1e-7, msg=f"{name} local_loss={local_loss}"
            )

    # the training loop itself ran on both ranks: rank 0 wrote the checkpoints, with both ranks' RNG states
    run = torch.load(str(tmp_path / "two.pt") + ".train", weights_only=True)
    assert len(run["losses"]) == 3
    ckpt = torch.load(run["checkpoint"], weights_only=True)
    assert ckpt["step"] == 3 and ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-rank dropout streams


def test_world_info_from_torchrun_and_slurm():
    assert world_info_from_env({}) == (0, 0, 1, "none")
    torchrun = {"RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "SLURM_PROCID": "0", "SLURM_NTASKS": "2"}
    assert world_info_from_env(torchrun) == (1, 5, 8, "torchrun")  # torchrun inside an allocation wins
    slurm = {"SLURM_PROCID": "3", "SLURM_LOCALID": "3", "SLURM_NTASKS": "8", "SLURM_STEP_NUM_TASKS": "4"}
    assert world_info_from_env(slurm) == (3, 3, 4, "slurm")  # the srun step's tasks, not the allocation's


def test_multi_process_launch_without_master_address_is_a_clear_error(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_NNODES"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setitem(os.environ, "SLURM_NTASKS", "2")
    monkeypatch.setitem(os.environ, "SLURM_STEP_NUM_TASKS", "2")
    monkeypatch.setitem(os.environ, "SLURM_STEP_NUM_NODES", "2")
    monkeypatch.setitem(os.environ, "SLURM_PROCID", "0")
    with pytest.raises(ValueError, match="MASTER_ADDR, MASTER_PORT not set"):
        init_distributed("cpu")
