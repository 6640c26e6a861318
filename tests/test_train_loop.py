"""The training loop on a micro EmotionCLIP, CPU, with batches built here (real tensors, contract shapes)."""

import copy
import math

import pytest
import torch

import emotionclip
from _train_util import make_batch, tiny_config
from emotionclip.loss import ClipLoss, SentimentGuidedClipLoss
from emotionclip.train import TrainConfig, train
from emotionclip.train.checkpoint import ResumeError
from emotionclip.train.distributed import DistEnv
from emotionclip.train.step import LossSelector, build_model, compute_loss


def test_overfits_a_fixed_batch(tmp_path):
    batch = make_batch(0, sentiment=False)
    cfg = tiny_config(tmp_path, max_steps=25)
    result = train(cfg, batches=lambda epoch: [batch] * 100)
    first, last = result.losses[0], sum(result.losses[-3:]) / 3
    assert len(result.losses) == 25 and result.loss_kind == "clip"
    assert first > 1.5  # ~ln(8) for a random init
    assert last < 0.35 * first, result.losses
    run = tmp_path / "run"
    assert (run / "loss.png").stat().st_size > 0 and (run / "config.yaml").is_file()
    assert any((run / "tensorboard").iterdir())
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000000025.pt"]


def test_sentiment_guided_loss_used_when_logits_present(tmp_path):
    cfg = tiny_config(tmp_path)
    model = build_model(cfg).eval()
    losses = LossSelector(cfg, DistEnv())
    batch = make_batch(1)
    with torch.no_grad():
        loss, kind = compute_loss(model, batch, losses, "fp32", torch.device("cpu"))
        v, t, scale = model(batch["video"], batch["video_mask"], batch["tokens"])
        guided = SentimentGuidedClipLoss(sentiment_scale=10.0)(v, t, scale, batch["sentiment_logits"])
        plain = ClipLoss()(v, t, scale)
        no_sentiment = {k: x for k, x in batch.items() if k != "sentiment_logits"}
        loss_plain, kind_plain = compute_loss(model, no_sentiment, losses, "fp32", torch.device("cpu"))
    assert kind == "sentiment_guided" and kind_plain == "clip"
    assert loss.item() == pytest.approx(guided.item(), rel=1e-6)
    assert loss_plain.item() == pytest.approx(plain.item(), rel=1e-6)
    assert abs(guided.item() - plain.item()) > 1e-3

    result = train(tiny_config(tmp_path, max_steps=2), batches=lambda epoch: [batch] * 4)
    assert result.loss_kind == "sentiment_guided"


def _epochs_source(epoch):
    return [make_batch(100 * epoch + i, batch_size=4) for i in range(3)]


def test_interrupted_and_resumed_run_gives_the_same_losses(tmp_path):
    common = dict(epochs=3, batch_size=4, warmup_steps=4, save_every=2)
    full = train(tiny_config(tmp_path / "a", **common), batches=_epochs_source)
    assert len(full.losses) == 9

    cfg = tiny_config(tmp_path / "b", **common, max_steps=5)  # stops mid-epoch 1
    part = train(cfg, batches=_epochs_source)
    assert part.losses == full.losses[:5]
    resumed = train(
        TrainConfig.from_dict({"max_steps": None, "resume": "latest"}, base=cfg), batches=_epochs_source
    )
    assert resumed.steps == list(range(1, 10))
    assert resumed.losses == full.losses  # bit-exact: dropout RNG, optimiser, schedule restored
    ckpts = sorted(p.name for p in (tmp_path / "b" / "run" / "checkpoints").iterdir())
    assert ckpts == ["epoch-000.pt", "epoch-001.pt", "epoch-002.pt", "step-000000008.pt", "step-000000009.pt"]

    a = torch.load(full.checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.checkpoint, weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_loads_for_inference(tmp_path):
    batch = make_batch(2)
    result = train(tiny_config(tmp_path, max_steps=2), batches=lambda epoch: [batch] * 4)
    ckpt = torch.load(result.checkpoint, weights_only=True)
    model = emotionclip.load_model(result.checkpoint)
    assert model.config.to_dict() == ckpt["model_config"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
    assert 0.0 <= model.logit_scale.item() <= 4.6052


def test_evaluator_hook_runs_every_k_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    calls = []

    def evaluator(model, step):
        calls.append((step, model.training, type(model).__name__))
        return {"probe_acc": step / 10}

    batch = make_batch(3)
    train(
        tiny_config(tmp_path, max_steps=4, eval_every=2), evaluator=evaluator, batches=lambda e: [batch] * 4
    )
    assert calls == [(2, False, "EmotionCLIP"), (4, False, "EmotionCLIP")]
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard")).Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "eval/probe_acc",
        "train/loss",
        "train/logit_scale",
        "perf/clips_per_s",
        "perf/data_wait_fraction",
        "lr/gain_bias",
        "lr/weights",
        "lr/logit_scale",
    } <= tags
    assert [e.value for e in events.Scalars("eval/probe_acc")] == pytest.approx([0.2, 0.4])


def test_bad_input_fails_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="--data is empty"):
        train(tiny_config(tmp_path, data=""))
    shard = tmp_path / "shard-000000.tar"
    shard.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"not exist.*shard-000001\.tar|shard-000001\.tar.*not exist"):
        train(tiny_config(tmp_path, data=str(tmp_path / "shard-{000000..000002}.tar")))
    assert not (tmp_path / "run").exists()

    batch = make_batch(4)
    cfg = tiny_config(tmp_path, max_steps=2)
    first = train(cfg, batches=lambda e: [batch] * 4)
    before = {p.name: p.read_bytes() for p in first.checkpoint.parent.iterdir()}

    with pytest.raises(FileExistsError, match="--resume latest"):  # never trains over an existing run
        train(cfg, batches=lambda e: [batch] * 4)
    bigger = TrainConfig.from_dict({"head_layers": 2, "resume": "latest", "max_steps": 4}, base=cfg)
    with pytest.raises(ResumeError, match="head_layers") as e:
        train(bigger, batches=lambda e: [batch] * 4)
    assert str(first.checkpoint) in str(e.value)
    weights_only = tmp_path / "weights.pt"
    torch.save({"model": build_model(cfg).state_dict()}, weights_only)
    with pytest.raises(ResumeError, match="model-only checkpoint"):
        train(TrainConfig.from_dict({"resume": str(weights_only)}, base=cfg), batches=lambda e: [batch] * 4)
    with pytest.raises(ResumeError, match="no such checkpoint"):
        train(
            TrainConfig.from_dict({"resume": str(tmp_path / "nope.pt")}, base=cfg), batches=lambda e: [batch]
        )
    assert {p.name: p.read_bytes() for p in first.checkpoint.parent.iterdir()} == before

    with pytest.raises(ValueError, match="no batches"):
        train(tiny_config(tmp_path / "empty"), batches=lambda e: [])


def test_logit_scale_is_clamped_and_bf16_runs(tmp_path):
    batch = make_batch(5)
    cfg = tiny_config(tmp_path, max_steps=3, precision="bf16", lr_logit_scale=10.0, grad_checkpointing=True)
    result = train(cfg, batches=lambda e: [copy.deepcopy(batch)] * 4)
    model = emotionclip.load_model(result.checkpoint)
    # lr 10 moves it by ~10 per step: it must sit at a bound of [0, ln 100]
    assert min(abs(model.logit_scale.item()), abs(model.logit_scale.item() - 4.6052)) < 1e-4
    assert all(torch.isfinite(torch.tensor(result.losses)))


def test_resume_auto_starts_then_continues(tmp_path):
    batch = make_batch(6)
    cfg = tiny_config(tmp_path, resume="auto", max_steps=2)
    first = train(cfg, batches=lambda e: [batch] * 6)
    again = train(TrainConfig.from_dict({"max_steps": 4}, base=cfg), batches=lambda e: [batch] * 6)
    assert first.steps == [1, 2] and again.steps == [1, 2, 3, 4]
    assert again.losses[:2] == first.losses


def test_wandb_requested_but_missing_is_a_clear_error(tmp_path):
    try:
        import wandb  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install wandb"):
            train(tiny_config(tmp_path, wandb=True), batches=lambda e: [make_batch(0)])
    else:
        pytest.skip("wandb is installed here")


def test_nonfinite_skip_skips_the_overflowing_step_and_finishes(tmp_path):
    good = [make_batch(20 + i) for i in range(3)]
    bad = make_batch(30)
    bad["video"][0, 0, 0, 0, 0] = float("inf")  # overflows the forward pass: the loss is NaN
    order = [good[0], bad, good[1], good[2]]
    states = {}

    def snapshot(model, step):
        states[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {}

    cfg = tiny_config(tmp_path / "skip", nonfinite="skip", eval_every=1)
    result = train(cfg, evaluator=snapshot, batches=lambda e: [copy.deepcopy(b) for b in order])
    assert result.steps == [1, 2, 3, 4] and result.skipped_steps == 1
    assert math.isnan(result.losses[1]) and all(math.isfinite(x) for x in result.losses[::2])
    # step 2 updated nothing (the optimiser state neither), steps 1 and 3 did
    assert all(torch.equal(states[2][k], v) for k, v in states[1].items())
    assert not all(torch.equal(states[3][k], v) for k, v in states[2].items())
    model = emotionclip.load_model(result.checkpoint)  # refuses NaN weights: none got in
    assert torch.load(result.checkpoint, weights_only=True)["skipped_steps"] == 1
    assert model.logit_scale.isfinite()

    with pytest.raises(FloatingPointError, match=r"not finite at step 2.*--nonfinite skip"):
        train(tiny_config(tmp_path / "stop"), batches=lambda e: [copy.deepcopy(b) for b in order])


def test_eval_bold_without_an_evaluator_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="make_probe_evaluator"):
        train(tiny_config(tmp_path, eval_bold=str(tmp_path)), batches=lambda e: [make_batch(0)])
    assert not (tmp_path / "run" / "checkpoints").exists()
