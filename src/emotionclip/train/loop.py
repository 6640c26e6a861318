"""The training run: ``train(config, evaluator=None, batches=None) -> TrainResult``.

Runs unchanged on one CPU, one GPU or many (torchrun / SLURM; see ``distributed.py``). The run is
set-up (checks, model, optimiser, resume), epochs of `TrainStep`s (``step.py``) and what is
recorded (``runlog.py``). Every check that can fail on user input (data, run folder, resume
checkpoint, W&B) runs before the first step, on every rank, so a mistake costs nothing and no
rank is left waiting for one that quit. Before each step the ranks exchange one set of flags
(has a batch, its size, stop requested, previous loss finite): one collective and one host sync.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from .._io import OUTPUT_MARKER, FileError, atomic_write, atomic_write_json, claim_output_dir
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
from .distributed import (
    DistEnv,
    StepFlags,
    all_gather_object,
    barrier,
    broadcast_object,
    cleanup,
    exchange_step_flags,
    init_distributed,
    raise_together,
)
from .optim import WarmupCosineSchedule, build_optimizer
from .runlog import RunLog
from .step import LossSelector, TrainStep, build_model, compute_loss, seed_everything, wrap_model

# the building blocks live in step.py; these names stay importable from here too
__all__ = ["Evaluator", "TrainResult", "train", "LossSelector", "build_model", "compute_loss", "wrap_model"]

logger = logging.getLogger(__name__)

Evaluator = Callable[[nn.Module, int], dict[str, float]]  # (EmotionCLIP, step) -> metrics
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)  # SLURM preemption / `--signal=USR1@120`


@dataclass
class TrainResult:
    run_dir: Path
    steps: list[int]  # whole run history (across resumes) on rank 0; this process's otherwise
    losses: list[float]
    loss_kind: str  # "sentiment_guided" or "clip": the loss of the last step
    checkpoint: Path | None  # the last checkpoint written
    stopped_by: str | None = None  # "SIGTERM"/"SIGUSR1" when a signal ended the run early (checkpointed)
    # one dict per optimiser step of this process since it started (or resumed): step (1-based),
    # epoch, loss, lr (per parameter group, the rates used in that step), logit_scale (after the clamp)
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    skipped_steps: int = 0  # steps whose loss was NaN/inf and that updated nothing (--nonfinite skip)


def train(
    config: TrainConfig, evaluator: Evaluator | None = None, batches: BatchSource | None = None
) -> TrainResult:
    """Train EmotionCLIP as ``config`` says; the run folder is ``config.output``.

    ``batches``: ``epoch -> iterable of batch dicts`` for this process, instead of the shards in
    ``config.data`` (it must give the same batches for the same epoch). ``evaluator(model, step)``
    runs on rank 0 every ``config.eval_every`` steps (and at each epoch end with ``eval_epoch_end``
    or ``eval_bold``) while the other ranks wait in a collective, so it must finish within
    ``config.dist_timeout_min``; its metrics go to TensorBoard as ``eval/*``. ``eval_bold`` needs
    an ``evaluator``: the ``emotionclip`` command builds the BoLD probe for it.
    SIGTERM / SIGUSR1 end the run after the current step with a checkpoint (``stopped_by``).
    """
    env = init_distributed(config.device, config.dist_timeout_min, config.tf32)
    try:
        with contextlib.ExitStack() as stack:
            stop = stack.enter_context(_StopSignals())
            return _Run(config, env, evaluator, batches, stack, stop).fit()
    finally:
        cleanup(env)


class _StopSignals:
    """Remembers a SIGTERM/SIGUSR1 instead of dying; the loop checkpoints and stops at the next step."""

    def __init__(self):
        self.received: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # only there can handlers be set
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.received = signal.Signals(signum).name
        logger.warning("%s received: checkpointing after this step, then stopping", self.received)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _Run:
    # ---- setup and resume ----------------------------------------------------------------------
    def __init__(
        self,
        config: TrainConfig,
        env: DistEnv,
        evaluator: Evaluator | None,
        batches: BatchSource | None,
        stack: contextlib.ExitStack,
        stop: _StopSignals,
    ):
        self.config, self.env, self.evaluator, self.stop = config, env, evaluator, stop
        if not config.output:
            raise ValueError("no run folder: set --output (config key 'output')")
        if config.eval_bold and evaluator is None:
            raise ValueError(
                "eval_bold needs an evaluator: run `emotionclip train --eval-bold ROOT`, or pass "
                "evaluator=emotionclip.evaluate.make_probe_evaluator('bold', ROOT) to train()"
            )
        if config.precision == "auto":  # resolved here, so config.yaml and checkpoints record the truth
            from ..precision import default_precision

            config = self.config = dataclasses.replace(config, precision=default_precision(env.device))
        if config.precision == "fp16" and env.device.type != "cuda":
            raise ValueError(
                f"precision fp16 needs a CUDA device, this run is on {env.device}; use --precision bf16 or fp32"
            )
        self.run_dir = Path(config.output).expanduser()
        self.ckpts = CheckpointDir(self.run_dir, config.keep_step_checkpoints)
        self.wandb = _import_wandb() if config.wandb else None

        # checks on user input before any work; rank 0 holds the run folder for the whole run
        urls = _on_all_ranks(env, lambda: expand_shards(config.data) if batches is None else None)
        _on_all_ranks(env, lambda: self._claim(stack) if env.is_main else None)
        resume_path, ckpt = self._resolve_resume()

        # on resume the weights come from the checkpoint: no need to fetch the pretrained CLIP
        self.model = build_model(dataclasses.replace(config, pretrained=None) if ckpt else config, env.device)
        if config.init:  # the architecture is the checkpoint's: refuse other settings, record its own
            config = self.config = _settle_init_architecture(config, self.model)
        self.optimizer = build_optimizer(self.model, config, env.device)
        self.source = batches
        if batches is None:  # the shard index is read here, which may fail on one rank only
            self.source = _on_all_ranks(
                env,
                lambda: shard_batch_source(
                    urls, config, env, self.model.config.preprocess, self.model.video_len
                ),
            )
        if batches is None and config.steps_per_epoch:  # resampling would spin forever on no clips
            _on_all_ranks(env, lambda: self.source.check_enough_clips() if env.is_main else 0)
        self.schedule = WarmupCosineSchedule(self.optimizer, config, _steps_per_epoch(self.source, config))
        scaler = torch.amp.GradScaler(env.device.type) if config.precision == "fp16" else None
        self.step = self.epoch = self.step_in_epoch = 0
        self.skipped_steps = 0
        self._evaluated_step = -1
        self.scaler = scaler
        self.stopped_by: str | None = None
        if ckpt is not None:
            _on_all_ranks(env, lambda: self._restore(ckpt, resume_path))
        else:
            seed_everything(config.seed + env.rank)  # dropout etc. differ per rank; weights were seeded alike
        train_model = wrap_model(self.model, config, env)
        self.train_step = TrainStep(self.model, train_model, self.optimizer, config, env, scaler)
        self.last_checkpoint: Path | None = resume_path
        self._saved_step = self.step if ckpt is not None else -1

    def _claim(self, stack: contextlib.ExitStack) -> None:
        """Lock the run folder (a second `train` on it is refused with the holder's pid); a run
        folder of an earlier version (config.yaml, no marker) is adopted."""
        if self.config.resume == "latest" and not self.run_dir.is_dir():
            raise ResumeError(self.run_dir, "--resume latest: no checkpoint (no such run folder)")
        if (self.run_dir / "config.yaml").is_file() and not (self.run_dir / OUTPUT_MARKER).exists():
            atomic_write_json(self.run_dir / OUTPUT_MARKER, {"tool": "train", "format": 1})
        stack.enter_context(claim_output_dir(self.run_dir, "train"))
        if self.config.resume is None and self._started():
            raise FileExistsError(
                f"{self.run_dir}: run folder holds a started run; continue it with --resume latest "
                "or choose a new --output"
            )

    def _started(self) -> bool:
        """A run has started once it logged a step or wrote a checkpoint; a start that failed
        before step 1 leaves only config.yaml behind and may simply be retried."""
        if self.ckpts.step_files():
            return True
        csv = self.run_dir / "loss.csv"
        return csv.is_file() and len(csv.read_text().splitlines()) > 1

    def _resolve_resume(self) -> tuple[Path | None, dict | None]:
        """Rank 0 picks the checkpoint (ranks listing a shared folder could disagree after a
        requeue) and tells the others, which then load that file."""
        resume, env = self.config.resume, self.env
        if resume == "auto" and env.is_main and not self.ckpts.step_files():
            logger.info("--resume auto: no checkpoint in %s yet, starting the run", self.ckpts.path)
            resume = None
        picked: dict[str, Any] = {}

        def pick():
            if env.is_main and resume:
                picked["path"], picked["ckpt"] = self.ckpts.resolve(resume)
                return str(picked["path"])
            return None

        path = broadcast_object(_on_all_ranks(env, pick), env)
        if path is None:
            return None, None
        ckpt = _on_all_ranks(env, lambda: picked["ckpt"] if env.is_main else load_checkpoint(path))
        return Path(path), ckpt

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
        self.skipped_steps = int(ckpt.get("skipped_steps", 0))
        rngs = ckpt.get("rng") or []
        if len(rngs) == self.env.world_size:
            set_rng_state(rngs[self.env.rank], self.env.device)
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

    # ---- epochs --------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        cfg, env, main = self.config, self.env, self.env.is_main
        if main:
            self._write_config()
            self.ckpts.remove_partial_files()
        barrier(env)  # no rank reads the run folder before rank 0 has set it up
        log = self.log = RunLog(self.run_dir, self.step, main, self.wandb, cfg)
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
        if self.stopped_by:
            logger.warning(
                "stopped by %s at step %d; checkpoint %s; continue with --resume latest",
                self.stopped_by,
                self.step,
                self.last_checkpoint,
            )
        return TrainResult(
            self.run_dir,
            steps,
            losses,
            self.train_step.loss_kind,
            self.last_checkpoint,
            self.stopped_by,
            log.records,
            self.skipped_steps,
        )

    def _run_epoch(self, log: RunLog, bar: tqdm) -> bool:
        """One epoch from ``self.step_in_epoch``; True when ``max_steps`` or a signal stopped the run."""
        cfg = self.config
        self.schedule.set_epoch(self.epoch)
        self.train_step.train_model.train()
        batches = EpochBatches(self.source, self.epoch, cfg.seed, self.env.rank, skip=self.step_in_epoch)
        window_start = time.perf_counter()
        full = bool(cfg.steps_per_epoch) and self.step_in_epoch >= cfg.steps_per_epoch  # stopped at its end
        batch = None if full else self._next_batch(batches, log)
        flags = self._agree(batch, None)
        epoch_full = hit_max = False
        while flags.all_have_batch:
            lrs = self.schedule.current_lrs()  # the rates this step uses
            loss = self.train_step(batch)
            self.step += 1
            self.step_in_epoch += 1
            self.schedule.step()
            epoch_full = bool(cfg.steps_per_epoch) and self.step_in_epoch >= cfg.steps_per_epoch
            hit_max = cfg.max_steps is not None and self.step >= cfg.max_steps
            batch = None if epoch_full or hit_max else self._next_batch(batches, log)
            flags = self._agree(batch, loss)  # also says whether `loss` was finite on every rank
            log.add(self.step, self.epoch, flags.loss, lrs, flags.extra[0])
            bar.update(1)
            if self.step % cfg.log_every == 0:
                self._log(log, bar, time.perf_counter() - window_start)
                window_start = time.perf_counter()
            if flags.stop:
                self.stopped_by = self.stop.received or "a stop signal on another rank"
                self._save(epoch_end=None)
                return True
            if cfg.save_every and self.step % cfg.save_every == 0:
                self._save(epoch_end=None)
            if self.evaluator is not None and cfg.eval_every and self.step % cfg.eval_every == 0:
                self._evaluate(log)
                window_start = time.perf_counter()
        if hit_max and not epoch_full:
            return True  # stopped inside the epoch
        if self.step_in_epoch == 0:
            raise ValueError(
                f"the training data gave no batches in epoch {self.epoch} ({cfg.data or 'batch source'}); "
                f"are there at least batch_size={cfg.batch_size} clips per process (after the neutral "
                f"filter, --neutral-threshold {cfg.neutral_threshold})?"
            )
        self._log(log, bar, time.perf_counter() - window_start)
        logger.info("epoch %d done at step %d", self.epoch, self.step)
        at_end = cfg.eval_epoch_end or cfg.eval_bold  # the release evaluates on each epoch's last batch
        if self.evaluator is not None and at_end and self._evaluated_step != self.step:
            self._evaluate(log)
        finished = self.epoch
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        self._save(epoch_end=finished)
        return hit_max

    def _next_batch(self, batches: EpochBatches, log: RunLog) -> dict[str, Any] | None:
        wait_start = time.perf_counter()
        batch = batches.next()
        log.data_wait += time.perf_counter() - wait_start
        return batch

    def _agree(self, batch: dict[str, Any] | None, loss: torch.Tensor | None) -> StepFlags:
        """The once-per-step exchange; raises on every rank alike when a rank's loss was not
        finite or the batch sizes differ (the feature gather needs equal sizes)."""
        size = None if batch is None else _batch_size(batch)
        scale = self.model.logit_scale.detach().reshape(1)  # read with the flags: no extra sync
        flags = exchange_step_flags(self.env, size, loss, self.stop.received is not None, extra=scale)
        if flags.nonfinite_ranks:
            ranks = ", ".join(map(str, flags.nonfinite_ranks))
            if self.config.nonfinite == "skip":  # the update was skipped in the step (or by the GradScaler)
                self.skipped_steps += 1
                logger.warning(
                    "training loss is not finite at step %d (rank %s): step skipped (%d so far)",
                    self.step,
                    ranks,
                    self.skipped_steps,
                )
                self.log.scalars(self.step, {"train/skipped_steps": self.skipped_steps})
            else:
                raise FloatingPointError(
                    f"training loss is not finite at step {self.step} (rank {ranks}); the last good "
                    f"checkpoint is {self.last_checkpoint}; try a lower learning rate or another precision "
                    f"than {self.config.precision}, or --nonfinite skip to skip such steps as the "
                    "release's GradScaler does"
                )
        low, high = flags.batch_sizes
        if flags.all_have_batch and low != high:
            raise ValueError(
                f"training batches differ in size across ranks at step {self.step + 1} ({low} to {high} "
                "clips): the cross-rank feature gather needs the same batch size on every rank; "
                "give every process batches of the same size (drop the last partial batch)"
            )
        return flags

    # ---- what is recorded ----------------------------------------------------------------------
    def _log(self, log: RunLog, bar: tqdm, elapsed: float) -> None:
        log.flush()
        losses = log.take_window()
        if not losses:
            return
        clips = len(losses) * self.config.batch_size * self.env.world_size
        scalars = {
            "train/loss_mean": sum(losses) / len(losses),  # over the log window; train/loss is per step
            "train/logit_scale": math.exp(log.records[-1]["logit_scale"]),
            "perf/clips_per_s": clips / max(elapsed, 1e-9),
            "perf/data_wait_fraction": min(1.0, log.data_wait / max(elapsed, 1e-9)),
            **{f"lr/{name}": lr for name, lr in self.schedule.current_lrs().items()},
        }
        log.data_wait = 0.0
        log.scalars(self.step, scalars)
        bar.set_postfix(
            loss=f"{losses[-1]:.4f}", clips_s=f"{scalars['perf/clips_per_s']:.1f}", epoch=self.epoch
        )

    def _evaluate(self, log: RunLog) -> None:
        """Rank 0 evaluates while the others wait; an evaluator error ends every rank."""
        error = None
        if self.env.is_main:
            try:
                self.model.eval()
                with torch.no_grad():
                    metrics = self.evaluator(self.model, self.step)
                logger.info("step %d evaluation: %s", self.step, metrics)
                log.scalars(self.step, {f"eval/{k}": float(v) for k, v in metrics.items()})
            except Exception as e:
                error = e
            finally:
                self.model.train()
        raise_together(self.env, error, f"in the evaluator at step {self.step}")
        self._evaluated_step = self.step

    def _save(self, epoch_end: int | None) -> None:
        """Rank 0 writes the checkpoint; if that fails (disk full) every rank stops with it."""
        self.log.flush()  # loss.csv covers every step the checkpoint holds
        rngs = all_gather_object(rng_state(self.env.device), self.env)
        error = None
        if self.env.is_main:
            try:
                path = self.ckpts.save(self._payload(rngs), self.step, epoch_end)
                logger.info("checkpoint %s", path)
            except Exception as e:
                error = e
        raise_together(self.env, error, f"writing the checkpoint of step {self.step}")
        self.last_checkpoint = self.ckpts.path / f"step-{self.step:09d}.pt"
        self._saved_step = self.step

    def _payload(self, rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "model_config": self.model.config.to_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "schedule": self.schedule.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "step_in_epoch": self.step_in_epoch,
            "skipped_steps": self.skipped_steps,
            "rng": rngs,
            "world_size": self.env.world_size,
            "config": self.config.to_dict(),
        }

    def _write_config(self) -> None:
        text = self.config.to_yaml()
        target = self.run_dir / "config.yaml"
        if self.step and target.exists() and target.read_text() != text:  # a resume with changed settings
            target = self.run_dir / f"config-resume-step{self.step}.yaml"
        atomic_write(target, text)
        logger.info("resolved training config (saved to %s):\n%s", target, text.rstrip())


_ARCHITECTURE_KEYS = ("video_len", "head_layers", "temporal_fusion")  # what --init's file decides


def _settle_init_architecture(config: TrainConfig, model) -> TrainConfig:
    """``config`` with the architecture of the ``--init`` model it fine-tunes.

    A setting that differs from both the default and the model's is a conflict (``ValueError``, one
    line); a default that differs is replaced by the model's value (logged), so ``config.yaml`` and the
    checkpoints record the model actually trained."""
    defaults = TrainConfig()
    actual = {key: getattr(model.config, key) for key in _ARCHITECTURE_KEYS}
    conflicts = [
        f"--{key.replace('_', '-')} {getattr(config, key)} (the checkpoint's is {actual[key]})"
        for key in _ARCHITECTURE_KEYS
        if getattr(config, key) not in (actual[key], getattr(defaults, key))
    ]
    if conflicts:
        raise ValueError(
            f"{config.init}: --init fixes the architecture; drop or correct {', '.join(conflicts)}"
        )
    changed = {k: v for k, v in actual.items() if getattr(config, k) != v}
    if changed:
        logger.warning(
            "--init %s: training its architecture (%s)",
            config.init,
            ", ".join(f"{k} {v}" for k, v in changed.items()),
        )
    return dataclasses.replace(config, **changed)


def _batch_size(batch: dict[str, Any]) -> int:
    video = batch.get("video")
    return int(video.shape[0]) if isinstance(video, torch.Tensor) else 0


def _steps_per_epoch(source: BatchSource, config: TrainConfig) -> int | None:
    """Optimiser steps per epoch, which the release's warm-up target depends on (its len(loader))."""
    if config.steps_per_epoch:
        return config.steps_per_epoch
    if not config.warmup_steps:
        return None
    steps = getattr(source, "steps_per_epoch", None)
    if callable(steps):
        steps = steps()
    elif hasattr(epoch0 := source(0), "__len__"):
        steps = len(epoch0)
    if steps is not None:
        return max(1, steps)  # an empty epoch stops the run later, with its own message
    raise ValueError(
        "the warm-up needs the number of steps per epoch and the batch source does not say it: "
        "set steps_per_epoch, or warmup_steps 0"
    )


def _on_all_ranks(env: DistEnv, check: Callable[[], Any]) -> Any:
    """Run an input check on every rank; when it fails anywhere, every rank raises (none is left
    waiting in a collective for a rank that quit)."""
    error = result = None
    try:
        result = check()
    except (ValueError, OSError, FileError) as e:
        error = e
    try:
        raise_together(env, error, "its input check")
    except RuntimeError as e:  # another rank's bad input is bad input here too
        raise ValueError(str(e)) from None
    return result


def _import_wandb():
    try:
        import wandb
    except ImportError:
        raise ValueError(
            "--wandb was given but Weights & Biases is not installed (pip install wandb)"
        ) from None
    return wandb
