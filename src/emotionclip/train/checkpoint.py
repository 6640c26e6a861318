"""Training checkpoints: atomic writes, ``latest`` resolution, RNG state, compatibility checks.

Layout of ``<run>/checkpoints``: ``step-000001000.pt`` every ``save_every`` steps (the newest
``keep_step_checkpoints`` kept) and ``epoch-003.pt`` at each epoch end (a hard link to that step's
file when the filesystem allows, so it costs no space). ``latest`` = the highest step number. A file is
written to a temporary name, flushed to disk and renamed, so a killed process leaves either the old
set or the new file, never a truncated ``.pt``.

A checkpoint is a dict that ``torch.load(..., weights_only=True)`` reads; ``model`` holds the model
state dict under the official key names and ``model_config`` its architecture, so
``emotionclip.load_model`` loads it for inference.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._io import FileError, atomic_path, remove_temporaries

logger = logging.getLogger(__name__)

FORMAT = "emotionclip-train/1"
_STEP_FILE = re.compile(r"^step-(\d{9})\.pt$")


class ResumeError(FileError, ValueError):
    """A checkpoint cannot be resumed by this run (``"PATH: problem"``)."""


class UnreadableCheckpoint(ResumeError):
    """The file is not a loadable checkpoint at all (truncated, foreign, empty)."""


# ---- RNG state ------------------------------------------------------------------------------
def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Python, numpy, torch and (for a CUDA ``device``) that device's generator state, in types
    ``weights_only`` loading accepts. Only the process's own GPU: a resume may see other devices."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    """Restore `rng_state`; the CUDA state goes to ``device`` (when it is a GPU). Checkpoints of
    older versions hold one state per visible GPU: the first is taken."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if isinstance(cuda, (list, tuple)):
        cuda = cuda[0] if cuda else None
    if cuda is not None and device is not None and device.type == "cuda":
        torch.cuda.set_rng_state(cuda, device)


# ---- files ----------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary name in the same folder, fsync, rename."""
    with atomic_path(path, fsync=True) as tmp:
        torch.save(obj, tmp)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class CheckpointDir:
    def __init__(self, run_dir: str | Path, keep_step_checkpoints: int = 2):
        self.path = Path(run_dir) / "checkpoints"
        self.keep = max(1, keep_step_checkpoints)

    def step_files(self) -> list[tuple[int, Path]]:
        if not self.path.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.path.iterdir() if (m := _STEP_FILE.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        files = self.step_files()
        return files[-1][1] if files else None

    def remove_partial_files(self) -> None:
        """Temporary files a killed writer left behind."""
        if self.path.is_dir():
            for p in remove_temporaries(self.path):
                logger.warning("removed partial checkpoint %s left by an interrupted run", p)

    def save(self, payload: dict[str, Any], step: int, epoch_end: int | None = None) -> Path:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / f"step-{step:09d}.pt"
        atomic_torch_save(payload, target)
        if epoch_end is not None:
            self._link(target, self.path / f"epoch-{epoch_end:03d}.pt")
        for _, old in self.step_files()[: -self.keep]:
            old.unlink(missing_ok=True)
        return target

    def _link(self, source: Path, name: Path) -> None:
        tmp = name.with_name(f".{name.name}.{os.getpid()}.tmp")  # atomic_path's naming, so cleanup finds it
        tmp.unlink(missing_ok=True)
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here: copy
            shutil.copyfile(source, tmp)
        os.replace(tmp, name)

    def resolve(self, resume: str) -> tuple[Path, dict[str, Any]]:
        """``'latest'``, ``'auto'`` or a path -> (checkpoint file, its contents).

        ``latest`` is the newest step file and must be readable (else the error names the newest
        readable one); ``auto`` falls back to the newest readable one with a warning, so that a
        requeued job whose last write was cut short continues from the one before."""
        if resume not in ("latest", "auto"):
            path = Path(resume).expanduser()
            if not path.is_file():
                raise ResumeError(path, "--resume: no such checkpoint file")
            return path, load_checkpoint(path)
        files = [p for _, p in reversed(self.step_files())]
        if not files:
            raise ResumeError(self.path, f"--resume {resume}: no checkpoint (step-*.pt) in this folder")
        broken: list[UnreadableCheckpoint] = []
        for path in files:
            try:
                ckpt = load_checkpoint(path)
            except UnreadableCheckpoint as e:
                broken.append(e)
                if resume == "latest":
                    continue  # only to name an older readable one in the error
                logger.warning("--resume auto: skipping %s", e)
                continue
            if resume == "latest" and broken:
                raise ResumeError(
                    files[0],
                    f"the newest checkpoint cannot be read ({broken[0].problem}); the newest readable one "
                    f"is {path}: pass --resume {path}, or --resume auto to fall back to it",
                )
            if broken:
                logger.warning("--resume auto: resuming from %s, the newest readable checkpoint", path)
            return path, ckpt
        if resume == "latest":
            raise broken[0]
        raise ResumeError(self.path, f"--resume auto: none of the {len(files)} checkpoints can be read")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint on CPU, checked to be one."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / foreign files raise many types
        raise UnreadableCheckpoint(
            path, f"cannot be read as a checkpoint, truncated or not one ({type(e).__name__}: {str(e)[:300]})"
        ) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        kind = (
            "a model-only checkpoint (weights without optimiser state)"
            if isinstance(ckpt, dict) and "model" in ckpt
            else "not a training checkpoint"
        )
        raise ResumeError(
            path,
            f"is {kind}; --resume needs a checkpoint written by `emotionclip train` (format {FORMAT}); "
            "to start from pretrained weights use --pretrained",
        )
    return ckpt


def check_compatible(
    ckpt: dict[str, Any], path: str | Path, model_config: dict[str, Any], train_config: dict[str, Any]
) -> list[str]:
    """Raise when the checkpoint's model architecture differs from this run's; return the other
    (allowed) config changes."""
    diffs = _dict_diff(ckpt.get("model_config") or {}, model_config)
    if diffs:
        lines = [f"model_config.{k}: checkpoint {a!r} vs this run {b!r}" for k, a, b in diffs[:8]]
        raise ResumeError(path, "incompatible with this run's model; differences:\n  " + "\n  ".join(lines))
    ignore = {
        "resume",
        "max_steps",
        "output",
        "data",
        "pretrained",
    }  # pretrained: weights come from the checkpoint
    return [
        f"{k}: {ckpt['config'].get(k)!r} -> {v!r}"
        for k, v in train_config.items()
        if k not in ignore and ckpt["config"].get(k) != v
    ]


def _dict_diff(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    out = []
    for key in sorted(set(a) | set(b), key=str):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(va, vb, f"{prefix}{key}.")
        elif _normalise(va) != _normalise(vb):
            out.append((f"{prefix}{key}", va, vb))
    return out


def _normalise(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
