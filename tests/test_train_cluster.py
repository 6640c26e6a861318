"""What a cluster run hits, on the CPU: two gloo processes launched as SLURM would, where one rank
fails (NaN loss, evaluator error, checkpoint write error, wrong batch size, a stop signal) and
both must end together with the same clear outcome; device mapping, RNG state across device
counts, launcher edges, and SIGTERM -> checkpoint -> resume."""

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from _train_util import make_batch, tiny_config

pytestmark = pytest.mark.multiprocess

JOIN_TIMEOUT_S = 240  # two spawned interpreters on a shared 2-core machine; a hang would last 30 min


# ---- two ranks, one process group, every scenario in turn -----------------------------------------
def _nan_source(rank):
    def source(epoch):
        batches = [make_batch(10 + i, batch_size=4) for i in range(4)]
        if rank == 1:
            batches[1]["video"][0, 0, 0, 0, 0] = float("nan")  # step 2 of rank 1 only
        return batches

    return source


def _signal_source(rank):
    def source(epoch):
        for i in range(6):
            if rank == 1 and i == 2:
                os.kill(os.getpid(), signal.SIGTERM)  # a preemption notice reaching one task first
            yield make_batch(20 + i, batch_size=4)

    return source


def _break_checkpoints(run_dir):
    def evaluator(model, step):
        folder = Path(run_dir) / "checkpoints"
        folder.rmdir() if folder.is_dir() else None
        folder.write_text("not a folder")  # the next checkpoint write fails on rank 0
        return {}

    return evaluator


def _scenarios(rank, folder):
    def cfg(name, **kw):
        return tiny_config(Path(folder) / name, batch_size=4, max_steps=4, **kw)

    def broken_evaluator(model, step):
        raise RuntimeError("evaluator broke")

    plain = lambda epoch: [make_batch(i, batch_size=4) for i in range(4)]  # noqa: E731
    uneven = lambda epoch: [make_batch(i, batch_size=4 - rank) for i in range(4)]  # noqa: E731
    yield "nan", lambda: _train(cfg("nan"), batches=_nan_source(rank))
    yield "evaluator", lambda: _train(cfg("ev", eval_every=2), evaluator=broken_evaluator, batches=plain)
    save_cfg = cfg("save", eval_every=1, save_every=2)
    yield "save", lambda: _train(save_cfg, evaluator=_break_checkpoints(save_cfg.output), batches=plain)
    yield "uneven", lambda: _train(cfg("uneven"), batches=uneven)
    yield "signal", lambda: _train(cfg("signal"), batches=_signal_source(rank))
    yield "resume", lambda: _train(cfg("signal", resume="latest"), batches=plain)  # rank 0 picks, both load


def _train(config, **kw):
    from emotionclip.train import train

    result = train(config, **kw)
    return {"stopped_by": result.stopped_by, "steps": result.steps, "checkpoint": str(result.checkpoint)}


def _rank_main(rank: int, folder: str, job_id: str) -> None:
    """One SLURM task of `srun --ntasks 2` on one node: no MASTER_ADDR/PORT exported."""
    for var in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    os.environ.update(
        SLURM_JOB_ID=job_id,
        SLURM_NTASKS="2",
        SLURM_STEP_NUM_TASKS="2",
        SLURM_STEP_NUM_NODES="1",
        SLURM_PROCID=str(rank),
        SLURM_LOCALID=str(rank),
    )
    torch.set_num_threads(1)
    from emotionclip.train.distributed import cleanup, exchange_step_flags, init_distributed

    env = init_distributed("cpu")
    out = {"port": os.environ["MASTER_PORT"], "world": env.world_size}
    # the flag exchange alone: only rank 1's loss is NaN, rank 1 has a batch of another size
    loss = torch.tensor(float("nan") if rank == 1 else 1.5)
    flags = exchange_step_flags(env, 4 if rank == 0 else 3, loss, stop=False)
    out["flags"] = [flags.nonfinite_ranks, flags.batch_sizes, flags.all_have_batch, flags.loss]
    for name, run in _scenarios(rank, folder):
        try:
            out[name] = {"result": run()}
        except Exception as e:
            out[name] = {"type": type(e).__name__, "message": str(e), "trace": traceback.format_exc()[-800:]}
    cleanup(env)
    Path(folder, f"rank{rank}.json").write_text(json.dumps(out, default=str))


def _job_with_free_port() -> tuple[str, int]:
    """A SLURM job id whose derived rendezvous port is free here."""
    import socket

    from emotionclip.train.distributed import slurm_master_port

    for job in range(os.getpid() % 10000, 10**6, 7919):
        port = slurm_master_port(str(job))
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return str(job), port
    raise RuntimeError("no free port in the SLURM-derived range")


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster")
    job_id, port = _job_with_free_port()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, str(folder), job_id)) for r in range(2)]
    start = time.monotonic()
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(timeout=max(1, JOIN_TIMEOUT_S - (time.monotonic() - start)))
        hung = [r for r, p in enumerate(procs) if p.is_alive()]
        assert not hung, (
            f"ranks {hung} still running after {JOIN_TIMEOUT_S} s: a rank waits for one that quit"
        )
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(10)
    results = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(2)]
    return results, port, folder


def test_slurm_tasks_on_one_node_need_no_master_variables(two_ranks):
    (r0, r1), port, _ = two_ranks
    assert r0["world"] == r1["world"] == 2
    assert int(r0["port"]) == int(r1["port"]) == port  # derived from SLURM_JOB_ID: two jobs do not collide


def test_flag_exchange_is_one_agreement_for_every_rank(two_ranks):
    (r0, r1), _, _ = two_ranks
    assert r0["flags"][:3] == r1["flags"][:3] == [[1], [3, 4], True]
    assert r0["flags"][3] == 1.5  # each rank keeps its own loss value


def _same_error(r0, r1, kind):
    assert "type" in r0[kind] and "type" in r1[kind], (r0[kind], r1[kind])
    return r0[kind], r1[kind]


def test_nan_loss_on_one_rank_stops_both_with_the_same_error(two_ranks):
    (r0, r1), _, _ = two_ranks
    e0, e1 = _same_error(r0, r1, "nan")
    assert e0["type"] == e1["type"] == "FloatingPointError"
    assert e0["message"] == e1["message"]
    assert "not finite at step 2" in e0["message"] and "rank" in e0["message"]


def test_evaluator_error_on_rank0_ends_both_ranks(two_ranks):
    (r0, r1), _, _ = two_ranks
    e0, e1 = _same_error(r0, r1, "evaluator")
    assert e0["type"] == "RuntimeError" and e0["message"] == "evaluator broke"
    assert e1["type"] == "RankFailure"
    assert "rank 0 failed in the evaluator at step 2" in e1["message"] and "evaluator broke" in e1["message"]


def test_checkpoint_write_error_on_rank0_ends_both_ranks(two_ranks):
    (r0, r1), _, _ = two_ranks
    e0, e1 = _same_error(r0, r1, "save")
    assert e0["type"] in ("FileExistsError", "NotADirectoryError")
    assert e1["type"] == "RankFailure" and "writing the checkpoint of step 2" in e1["message"]


def test_batch_size_disagreement_is_refused_on_both_ranks(two_ranks):
    (r0, r1), _, folder = two_ranks
    e0, e1 = _same_error(r0, r1, "uneven")
    assert e0["type"] == e1["type"] == "ValueError" and e0["message"] == e1["message"]
    assert "differ in size across ranks at step 1 (3 to 4 clips)" in e0["message"]
    assert not list((folder / "uneven" / "run").glob("checkpoints/step-*"))  # refused before any step


def test_stop_signal_on_one_rank_stops_both_at_the_same_step_with_a_checkpoint(two_ranks):
    (r0, r1), _, _ = two_ranks
    a, b = r0["signal"].get("result"), r1["signal"].get("result")
    assert a and b, (r0["signal"], r1["signal"])
    assert b["stopped_by"] == "SIGTERM" and a["stopped_by"]  # rank 0 learnt it from the exchange
    assert a["checkpoint"] == b["checkpoint"]
    step = torch.load(a["checkpoint"], weights_only=True)["step"]
    assert step == len(b["steps"]) < 4  # stopped early, every trained step checkpointed
    resumed = r0["resume"].get("result"), r1["resume"].get("result")
    assert resumed[0] and resumed[1], (r0["resume"], r1["resume"])
    assert resumed[0]["steps"] == [1, 2, 3, 4] and resumed[1]["steps"] == list(range(step + 1, 5))


# ---- single-process units ---------------------------------------------------------------------
def test_cuda_index_is_local_rank_modulo_visible_devices():
    from emotionclip.train.distributed import cuda_index

    assert [cuda_index(r, 8) for r in (0, 3, 7)] == [0, 3, 7]  # torchrun: all GPUs visible
    assert [cuda_index(r, 1) for r in range(4)] == [0, 0, 0, 0]  # SLURM binding one GPU per task
    assert [cuda_index(r, 2) for r in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="no CUDA device"):
        cuda_index(0, 0)


def test_rng_state_restores_where_the_device_count_differs():
    import random

    import numpy as np

    from emotionclip.train.checkpoint import rng_state, set_rng_state

    state = rng_state(torch.device("cpu"))
    assert "cuda" not in state  # a CPU process saves no GPU state
    expected = (random.random(), np.random.rand(), torch.rand(1))
    # written on a node with 4 visible GPUs by an older version (one state per GPU), resumed on CPU
    state["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 4
    set_rng_state(state, torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected
    if torch.cuda.is_available():  # one GPU here: the saved first state goes to this process's device
        device = torch.device("cuda", 0)
        gpu_state = rng_state(device)
        expected_gpu = torch.rand(1, device=device)
        set_rng_state({**gpu_state, "cuda": [gpu_state["cuda"]] * 4}, device)
        assert torch.equal(torch.rand(1, device=device), expected_gpu)


def test_plain_python_inside_a_multi_task_allocation_is_a_clear_error():
    from emotionclip.train.distributed import world_info_from_env

    batch_script = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "8", "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}
    with pytest.raises(ValueError, match="not started by srun.*srun python -m emotionclip train"):
        world_info_from_env(batch_script)
    assert world_info_from_env({**batch_script, "SLURM_NTASKS": "1"}) == (0, 0, 1, "none")


def test_sigterm_checkpoints_and_exits_then_resume_continues(tmp_path):
    from _train_util import micro_backbone, write_shards
    from emotionclip.cli import main

    pattern = write_shards(tmp_path / "corpus", n_shards=1, clips_per_shard=8)
    backbone = micro_backbone(tmp_path)
    run = tmp_path / "run"
    args = [
        "train",
        *("--data", pattern, "--output", str(run), "--backbone", backbone, "--pretrained", "none"),
        *("--head-layers", "1", "--video-len", "4", "--batch-size", "4", "--workers", "0"),
        *("--device", "cpu", "--precision", "fp32", "--log-every", "1", "--warmup-steps", "0"),
        *("--save-every", "1000", "--epochs", "1000"),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE", "RANK"))}
    env["OMP_NUM_THREADS"] = "2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotionclip", *args, "--max-steps", "5000"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    csv = run / "loss.csv"
    try:
        deadline = time.monotonic() + 180
        while not (csv.is_file() and len(csv.read_text().splitlines()) >= 4):  # 3 steps logged
            assert proc.poll() is None, f"training exited early: {proc.stdout.read()[-2000:]}"
            assert time.monotonic() < deadline, "no 3 steps after 180 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 75, output[-2000:]
    assert "stopped by SIGTERM" in output
    steps = [int(line.split(",")[0]) for line in csv.read_text().splitlines()[1:]]
    stopped_at = steps[-1]
    ckpt = run / "checkpoints" / f"step-{stopped_at:09d}.pt"
    assert torch.load(ckpt, weights_only=True)["step"] == stopped_at  # every trained step is saved

    assert main([*args, "--resume", "latest", "--max-steps", str(stopped_at + 2)]) == 0
    steps = [int(line.split(",")[0]) for line in csv.read_text().splitlines()[1:]]
    assert steps == list(range(1, stopped_at + 3))


def test_resume_skips_batches_without_reading_them_and_gets_the_same_ones(tmp_path):
    from _train_util import write_shards
    from emotionclip.shards.reader import make_train_loader

    pattern = write_shards(tmp_path / "corpus", n_shards=2, clips_per_shard=8, frames=6, size=64)
    common = dict(batch_size=2, video_len=4, image_size=32, resize=36, seed=5, epoch=1)
    full = list(make_train_loader(pattern, **common))
    rest = make_train_loader(pattern, **common, skip_batches=5)
    assert len(full) == 8 and len(rest) == 3  # the skipped batches are never read
    for a, b in zip(full[5:], list(rest), strict=True):
        assert a["key"] == b["key"]
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["video_mask"], b["video_mask"])
    with_workers = list(make_train_loader(pattern, **common, skip_batches=5, num_workers=2))
    for a, b in zip(full[5:], with_workers, strict=True):  # a clip's crops do not depend on the worker
        assert torch.equal(a["video"], b["video"])


def test_uniform_loader_keeps_its_workers_from_epoch_to_epoch(tmp_path):
    from _train_util import write_shards
    from emotionclip.shards.reader import make_train_loader

    pattern = write_shards(tmp_path / "corpus", n_shards=2, clips_per_shard=8, frames=6, size=64)
    common = dict(batch_size=2, video_len=4, image_size=32, resize=36, seed=5, num_workers=2)
    first = make_train_loader(pattern, **common, epoch=0)
    list(first)
    workers = {w.pid for w in first.loader._iterator._workers}
    second = make_train_loader(pattern, **common, epoch=1, reuse=first)
    epoch1 = list(second)
    assert second is first and {w.pid for w in second.loader._iterator._workers} == workers
    fresh = list(make_train_loader(pattern, **{**common, "num_workers": 0}, epoch=1))
    for a, b in zip(epoch1, fresh, strict=True):  # the reused loader gives epoch 1's own batches
        assert a["key"] == b["key"] and torch.equal(a["video"], b["video"])
