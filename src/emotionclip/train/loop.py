"""The training loop: ``train(config, evaluator=None, batches=None) -> TrainResult``.

Runs unchanged on one CPU, one GPU or many (torchrun / SLURM; see ``distributed.py``). Every
check that can fail on user input (data, output folder, resume checkpoint, W&B) runs before the
first step, so a mistake costs nothing.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .._io import atomic_path, atomic_write
from .checkpoint import (
    FORMAT,
    CheckpointDir,
    ResumeError,
    check_compatible,
    load_checkpoint,
    rng_state,
    set_rng_state,
)
from .config import TrainConfig
from .data import BatchSource, EpochBatches, expand_shards, shard_batch_source
from .distributed import DistEnv, all_gather_object, barrier, cleanup, init_distributed
from .optim import WarmupCosineSchedule, build_optimizer

logger = logging.getLogger(__name__)

Evaluator = Callable[[nn.Module, int], dict[str, float]]  # (EmotionCLIP, step) -> metrics


@dataclass
class TrainResult:
    run_dir: Path
    steps: list[int]  # whole run history (across resumes) on rank 0; this process's otherwise
    losses: list[float]
    loss_kind: str  # "sentiment_guided" or "clip": the loss of the last step
    checkpoint: Path | None  # the last checkpoint written


# ---- building blocks (also used by tests and the benchmark) ----------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(config: TrainConfig, device: torch.device | str = "cpu") -> nn.Module:
    """The EmotionCLIP to train: same initial weights on every rank (seeded), towers locked as asked."""
    from ..factory import create_model

    seed_everything(config.seed)
    model = create_model(
        backbone=config.backbone,
        pretrained=config.pretrained,
        temporal_fusion=config.temporal_fusion,
        video_len=config.video_len,
        head_layers=config.head_layers,
    )
    # CLIP's own temperature is kept for the release's key set but never used by the loss;
    # frozen, so DDP does not wait for a gradient that never comes
    model.backbone.logit_scale.requires_grad_(False)
    model.lock_towers(image=config.lock_image, text=config.lock_text)
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    return model.to(device)


def wrap_model(model: nn.Module, config: TrainConfig, env: DistEnv) -> nn.Module:
    """DDP across processes, then ``torch.compile`` if asked."""
    if env.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device] if env.device.type == "cuda" else None
        )
    if config.compile:
        model = torch.compile(model)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class LossSelector:
    """Sentiment-guided loss when a batch carries sentiment logits (and α > 0), else CLIP's."""

    def __init__(self, config: TrainConfig, env: DistEnv):
        from emotionclip.loss import ClipLoss, SentimentGuidedClipLoss

        common = dict(
            local_loss=config.local_loss,
            gather_with_grad=config.gather_with_grad,
            rank=env.rank,
            world_size=env.world_size,
        )
        self.clip = ClipLoss(**common)
        self.guided = SentimentGuidedClipLoss(sentiment_scale=config.sentiment_scale, **common)
        self.use_sentiment = config.sentiment_scale > 0

    def __call__(self, video_feats, text_feats, logit_scale, sentiment_logits):
        if sentiment_logits is not None and self.use_sentiment:
            return self.guided(video_feats, text_feats, logit_scale, sentiment_logits), "sentiment_guided"
        return self.clip(video_feats, text_feats, logit_scale), "clip"


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.float16 if precision == "amp_fp16" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


def compute_loss(
    model: nn.Module,
    batch: dict[str, torch.Tensor],
    losses: LossSelector,
    precision: str,
    device: torch.device,
) -> tuple[torch.Tensor, str]:
    """Forward pass and loss of one batch (already on ``device``)."""
    missing = [k for k in ("video", "tokens") if k not in batch]
    if missing:
        raise KeyError(f"training batch lacks {missing}; it has {sorted(batch)}")
    with autocast_context(precision, device):
        video_feats, text_feats, logit_scale = model(batch["video"], batch.get("video_mask"), batch["tokens"])
    return losses(video_feats, text_feats, logit_scale, batch.get("sentiment_logits"))


# ---- the run ---------------------------------------------------------------------------------
def train(
    config: TrainConfig, evaluator: Evaluator | None = None, batches: BatchSource | None = None
) -> TrainResult:
    """Train EmotionCLIP as ``config`` says; the run folder is ``config.output``.

    ``batches``: ``epoch -> iterable of batch dicts`` for this process, instead of the shards in
    ``config.data`` (it must give the same batches for the same epoch). ``evaluator(model, step)``
    runs on rank 0 every ``config.eval_every`` steps; its metrics go to TensorBoard as ``eval/*``.
    """
    env = init_distributed(config.device, config.dist_timeout_min)
    try:
        return _Run(config, env, evaluator, batches).fit()
    finally:
        cleanup(env)


class _Run:
    def __init__(
        self, config: TrainConfig, env: DistEnv, evaluator: Evaluator | None, batches: BatchSource | None
    ):
        self.config, self.env, self.evaluator = config, env, evaluator
        if not config.output:
            raise ValueError("no run folder: set --output (config key 'output')")
        self.run_dir = Path(config.output).expanduser()
        self.ckpts = CheckpointDir(self.run_dir, config.keep_step_checkpoints)
        self.wandb = _import_wandb() if config.wandb else None
        if config.precision == "amp_fp16" and env.device.type == "cpu":
            logger.warning("amp_fp16 on CPU is slow on most processors; amp_bf16 or fp32 is usually faster")

        # checks on user input, on every rank, before any work
        urls, resume_path, ckpt = _on_all_ranks(env, lambda: self._check_inputs(batches is None))

        # on resume the weights come from the checkpoint: no need to fetch the pretrained CLIP
        self.model = build_model(dataclasses.replace(config, pretrained=None) if ckpt else config, env.device)
        self.optimizer = build_optimizer(self.model, config, env.device)
        self.schedule = WarmupCosineSchedule(self.optimizer, config)
        self.scaler = torch.amp.GradScaler(env.device.type) if config.precision == "amp_fp16" else None
        self.losses = LossSelector(config, env)
        self.source = (
            batches
            if batches is not None
            else shard_batch_source(urls, config, env, self.model.config.preprocess)
        )
        self.step = self.epoch = self.step_in_epoch = 0
        if ckpt is not None:
            _on_all_ranks(env, lambda: self._restore(ckpt, resume_path))
        if ckpt is None:
            seed_everything(config.seed + env.rank)  # dropout etc. differ per rank; weights were seeded alike
        self.train_model = wrap_model(self.model, config, env)
        self.last_checkpoint: Path | None = resume_path
        self._saved_step = self.step if ckpt is not None else -1
        self.loss_kind = ""
        barrier(env)  # no rank writes into the run folder before every rank has checked it

    def _check_inputs(self, from_shards: bool) -> tuple[list[str] | None, Path | None, dict | None]:
        urls = expand_shards(self.config.data) if from_shards else None
        resume = self.config.resume
        if resume == "auto":  # for re-queued jobs: the same command starts the run, then continues it
            resume = "latest" if self.ckpts.latest() is not None else None
            if resume is None:
                logger.info("--resume auto: no checkpoint in %s yet, starting the run", self.ckpts.path)
        if resume:
            path = self.ckpts.resolve(resume)
            return urls, path, load_checkpoint(path)
        if self.config.resume != "auto" and self.run_dir.exists() and any(self.run_dir.iterdir()):
            raise FileExistsError(
                f"{self.run_dir}: run folder exists and is not empty; continue it with --resume latest "
                "or choose a new --output"
            )
        return urls, None, None

    def _restore(self, ckpt: dict[str, Any], path: Path) -> None:
        changes = check_compatible(ckpt, path, self.model.config.to_dict(), self.config.to_dict())
        for change in changes:
            logger.warning("resuming %s with a changed setting %s", path, change)
        try:
            self.model.load_state_dict(ckpt["model"], strict=True)
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise ResumeError(path, f"does not fit this run's model/optimizer: {str(e)[:500]}") from e
        if self.scaler is not None and ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.schedule.load_state_dict(ckpt["schedule"])
        self.step, self.epoch, self.step_in_epoch = ckpt["step"], ckpt["epoch"], ckpt["step_in_epoch"]
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.env.world_size:
            set_rng_state(rngs[self.env.rank])
        else:
            logger.warning(
                "checkpoint was written by %d processes, this run has %d: data order and random "
                "state differ from an uninterrupted run",
                len(rngs),
                self.env.world_size,
            )
            seed_everything(self.config.seed + self.env.rank + self.step)
        logger.info(
            "resumed from %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.step_in_epoch
        )

    # ---- main loop ---------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, env, main = self.config, self.env, self.env.is_main
        if main:
            self._write_config()
        barrier(env)
        if main:
            self.ckpts.remove_partial_files()
        log = self.log = _RunLog(self.run_dir, self.step, main, self.wandb, cfg)
        total = cfg.max_steps or (cfg.steps_per_epoch * cfg.epochs if cfg.steps_per_epoch else None)
        bar = tqdm(total=total, initial=self.step, disable=not main, unit="step", dynamic_ncols=True)
        stopped = cfg.max_steps is not None and self.step >= cfg.max_steps
        try:
            while self.epoch < cfg.epochs and not stopped:
                stopped = self._run_epoch(log, bar)
            if self._saved_step != self.step:
                self._save(epoch_end=None)
        finally:
            bar.close()
            log.close()
        steps, losses = log.history() if main else (log.own_steps, log.own_losses)
        return TrainResult(self.run_dir, steps, losses, self.loss_kind, self.last_checkpoint)

    def _run_epoch(self, log: _RunLog, bar: tqdm) -> bool:
        """One epoch from ``self.step_in_epoch``; True when ``max_steps`` stopped it."""
        cfg = self.config
        self.schedule.set_epoch(self.epoch)
        self.train_model.train()
        batches = EpochBatches(self.source, self.epoch, cfg.seed, self.env.rank)
        self._skip(batches, self.step_in_epoch)
        window_start = time.perf_counter()
        while True:
            if cfg.steps_per_epoch and self.step_in_epoch >= cfg.steps_per_epoch:
                break
            if cfg.max_steps is not None and self.step >= cfg.max_steps:
                return True
            wait_start = time.perf_counter()
            batch = batches.next()
            log.data_wait += time.perf_counter() - wait_start
            if not self._every_rank_has_batch(batch is not None):
                break
            loss = self._train_step(batch)
            self.step += 1
            self.step_in_epoch += 1
            self.schedule.step()
            log.add(self.step, self.epoch, loss)
            bar.update(1)
            if self.step % cfg.log_every == 0:
                self._log(log, bar, time.perf_counter() - window_start)
                window_start = time.perf_counter()
            if cfg.save_every and self.step % cfg.save_every == 0:
                self._save(epoch_end=None)
            if self.evaluator is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                self._evaluate(log)
                window_start = time.perf_counter()
        if self.step_in_epoch == 0:
            raise ValueError(
                f"the training data gave no batches in epoch {self.epoch} ({cfg.data or 'batch source'}); "
                f"are there at least batch_size={cfg.batch_size} clips per process?"
            )
        self._log(log, bar, time.perf_counter() - window_start)
        logger.info("epoch %d done at step %d", self.epoch, self.step)
        finished = self.epoch
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._save(epoch_end=finished)
        return False

    def _skip(self, batches: EpochBatches, n: int) -> None:
        """Drop the first ``n`` batches of an epoch (trained on before the resume)."""
        if n:
            logger.info("skipping the %d batches of epoch %d trained before the resume", n, self.epoch)
        for _ in range(n):
            if batches.next() is None:
                break

    def _every_rank_has_batch(self, has_batch: bool) -> bool:
        """Ranks stop an epoch together when any one runs out of data (else DDP would hang)."""
        if not self.env.distributed:
            return has_batch
        flag = torch.tensor([int(has_batch)], device=self.env.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        return bool(flag.item())

    def _train_step(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        batch = to_device(batch, self.env.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss, self.loss_kind = compute_loss(
            self.train_model, batch, self.losses, self.config.precision, self.env.device
        )
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            self.model.logit_scale.clamp_(0.0, self.config.logit_scale_max)
        return loss.detach()

    def _log(self, log: _RunLog, bar: tqdm, elapsed: float) -> None:
        log.flush()
        losses, log.window = log.window, []
        if not losses:
            return
        if not all(math.isfinite(x) for x in losses):
            raise FloatingPointError(
                f"training loss is not finite at step {self.step} ({losses[-5:]}); the last good checkpoint "
                f"is {self.last_checkpoint}; try a lower learning rate or another precision than {self.config.precision}"
            )
        clips = len(losses) * self.config.batch_size * self.env.world_size
        scalars = {
            "train/loss_mean": sum(losses) / len(losses),  # over the log window; train/loss is per step
            "train/logit_scale": float(self.model.logit_scale.detach().exp()),
            "perf/clips_per_s": clips / max(elapsed, 1e-9),
            "perf/data_wait_fraction": min(1.0, log.data_wait / max(elapsed, 1e-9)),
            **{f"lr/{name}": lr for name, lr in self.schedule.current_lrs().items()},
        }
        log.data_wait = 0.0
        log.scalars(self.step, scalars)
        bar.set_postfix(
            loss=f"{losses[-1]:.4f}", clips_s=f"{scalars['perf/clips_per_s']:.1f}", epoch=self.epoch
        )

    def _evaluate(self, log: _RunLog) -> None:
        if self.env.is_main:
            self.model.eval()
            with torch.no_grad():
                metrics = self.evaluator(self.model, self.step)
            self.model.train()
            logger.info("step %d evaluation: %s", self.step, metrics)
            log.scalars(self.step, {f"eval/{k}": float(v) for k, v in metrics.items()})
        barrier(self.env)

    def _save(self, epoch_end: int | None) -> None:
        self.log.flush()  # loss.csv covers every step the checkpoint holds
        rngs = all_gather_object(rng_state(), self.env)
        if self.env.is_main:
            payload = {
                "format": FORMAT,
                "model": self.model.state_dict(),
                "model_config": self.model.config.to_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "schedule": self.schedule.state_dict(),
                "step": self.step,
                "epoch": self.epoch,
                "step_in_epoch": self.step_in_epoch,
                "rng": rngs,
                "world_size": self.env.world_size,
                "config": self.config.to_dict(),
            }
            path = self.ckpts.save(payload, self.step, epoch_end)
            logger.info("checkpoint %s", path)
        self.last_checkpoint = self.ckpts.path / f"step-{self.step:09d}.pt"
        self._saved_step = self.step
        barrier(self.env)

    def _write_config(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        text = self.config.to_yaml()
        print(
            f"# emotionclip train: resolved config (saved to {self.run_dir / 'config.yaml'})\n{text}",
            flush=True,
        )
        target = self.run_dir / "config.yaml"
        if target.exists() and target.read_text() != text:  # a resume with changed settings: keep both
            target = self.run_dir / f"config-resume-step{self.step}.yaml"
        atomic_write(target, text)


def _on_all_ranks(env: DistEnv, check: Callable[[], Any]) -> Any:
    """Run an input check on every rank; when it fails anywhere, every rank raises (none is left
    waiting in a collective for a rank that quit)."""
    error = None
    try:
        result = check()
    except (ValueError, OSError) as e:
        error, result = e, None
    failures = [f for f in all_gather_object(None if error is None else str(error), env) if f]
    if error is not None:
        raise error
    if failures:
        raise ValueError(f"another training process failed its input check: {failures[0]}")
    return result


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError(
            "--wandb was given but Weights & Biases is not installed (pip install wandb)"
        ) from None
    return wandb


class _RunLog:
    """Per-step losses (``loss.csv``), TensorBoard / W&B scalars, the loss-curve plot; rank 0 writes."""

    def __init__(self, run_dir: Path, start_step: int, main: bool, wandb, config: TrainConfig):
        self.run_dir, self.main = run_dir, main
        self.csv_path = run_dir / "loss.csv"
        self.pending: list[tuple[int, int, torch.Tensor]] = []
        self.own_steps: list[int] = []
        self.own_losses: list[float] = []
        self.window: list[float] = []  # losses since the last scalar log (clips/s, NaN check)
        self.data_wait = 0.0
        self.writer = self.wandb_run = None
        if not main:
            return
        self._truncate_csv(start_step)
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            str(run_dir / "tensorboard"), purge_step=start_step + 1 if start_step else None
        )
        if wandb is not None:
            self.wandb_run = wandb.init(
                project=config.wandb_project,
                name=run_dir.name,
                dir=str(run_dir),
                config=config.to_dict(),
                resume="allow",
            )

    def _truncate_csv(self, start_step: int) -> None:
        """Drop rows past the resumed step (logged after the checkpoint by a killed run)."""
        rows = self._read() if self.csv_path.exists() else []
        kept = [r for r in rows if r[0] <= start_step]
        lines = ["step,epoch,loss"] + [f"{s},{e},{loss!r}" for s, e, loss in kept]
        atomic_write(self.csv_path, "\n".join(lines) + "\n")

    def _read(self) -> list[tuple[int, int, float]]:
        with open(self.csv_path, newline="") as f:
            return [(int(r["step"]), int(r["epoch"]), float(r["loss"])) for r in csv.DictReader(f)]

    def add(self, step: int, epoch: int, loss: torch.Tensor) -> None:
        self.pending.append((step, epoch, loss))

    def flush(self) -> None:
        if not self.pending:
            return
        values = torch.stack([loss for _, _, loss in self.pending]).float().cpu().tolist()
        rows = [(s, e, v) for (s, e, _), v in zip(self.pending, values, strict=True)]
        self.pending.clear()
        self.own_steps += [s for s, _, _ in rows]
        self.own_losses += values
        self.window += values
        if self.main:
            with open(self.csv_path, "a") as f:
                f.writelines(f"{s},{e},{v!r}\n" for s, e, v in rows)
            for s, _, v in rows:
                self.writer.add_scalar("train/loss", v, s)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.main:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def history(self) -> tuple[list[int], list[float]]:
        rows = self._read()
        return [r[0] for r in rows], [r[2] for r in rows]

    def close(self) -> None:
        self.flush()
        if not self.main:
            return
        self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()
        steps, losses = self.history()
        if steps:
            plot_loss_curve(steps, losses, self.run_dir / "loss.png")


def plot_loss_curve(steps: list[int], losses: list[float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, lw=0.8, alpha=0.5, label="loss per step")
    window = max(1, len(losses) // 50)
    if window > 1:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], smooth, lw=1.8, label=f"mean of {window} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("contrastive loss")
    ax.set_title(f"training loss — {path.parent.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
