"""What a run records: per-step losses (``loss.csv``), TensorBoard / W&B scalars, the loss curve.

Only rank 0 writes; every rank keeps its own losses for `TrainResult`. A resumed run first drops
the rows a killed run logged after its last checkpoint, so ``loss.csv`` has each step once.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from .._io import atomic_path, atomic_write
from .config import TrainConfig

logger = logging.getLogger(__name__)


class RunLog:
    def __init__(self, run_dir: Path, start_step: int, main: bool, wandb, config: TrainConfig):
        self.run_dir, self.main = run_dir, main
        self.csv_path = run_dir / "loss.csv"
        self.pending: list[tuple[int, int, float]] = []  # rows not yet in loss.csv / TensorBoard
        self.records: list[dict] = []  # TrainResult.history
        self.own_steps: list[int] = []
        self.own_losses: list[float] = []
        self.window: list[float] = []  # losses since the last scalar log (mean, clips/s)
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

    def add(self, step: int, epoch: int, loss: float, lrs: dict[str, float], logit_scale: float) -> None:
        """One step's values, already on the host (read with the step's flags)."""
        self.pending.append((step, epoch, loss))
        self.records.append(
            {"step": step, "epoch": epoch, "loss": loss, "lr": lrs, "logit_scale": logit_scale}
        )
        self.own_steps.append(step)
        self.own_losses.append(loss)
        self.window.append(loss)

    def flush(self) -> None:
        rows, self.pending = self.pending, []
        if not (rows and self.main):
            return
        with open(self.csv_path, "a") as f:
            f.writelines(f"{s},{e},{v!r}\n" for s, e, v in rows)
        for s, _, v in rows:
            self.writer.add_scalar("train/loss", v, s)

    def take_window(self) -> list[float]:
        window, self.window = self.window, []
        return window

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.main:
            return
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        if self.wandb_run is not None:
            self.wandb_run.log(values, step=step)

    def history(self) -> tuple[list[int], list[float]]:
        """The whole run's steps and losses (across resumes), from ``loss.csv``."""
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
