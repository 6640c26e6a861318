"""Atomic file output shared by every stage: write beside the target, then rename into place.

A reader (or a resumed job) therefore sees either the old file or the complete new one, never a
half-written one, even if the process is killed mid-write.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class FileError(Exception):
    """An input file is unusable; the message is ``"PATH: problem"`` so batch summaries can list it."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


TEMP_PATTERN = ".*.tmp"  # what the temporaries of atomic_path, atomic_dir and AtomicTar look like


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _honour_umask(path: Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give the final file the mode a plain open() would have, so
    group members on a shared cluster can read checkpoints and manifests."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary file path beside ``path``; on success it replaces ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was. ``fsync`` flushes
    the data to disk before the rename (for large outputs that a crash must not truncate).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _honour_umask(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete what writers killed mid-write left in ``folder``: ``.NAME.*.tmp`` files (atomic_path,
    AtomicTar) and folders (atomic_dir). Only these names, which no user file has by accident."""
    return remove_paths(Path(folder).glob(TEMP_PATTERN))


def remove_paths(paths) -> list[Path]:
    """Delete these temporaries (files, or folders of ``atomic_dir``); the caller chose them by name."""
    removed = sorted(paths)
    for p in removed:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return removed


def atomic_write(path: str | os.PathLike, data: str | bytes, fsync: bool = False) -> None:
    """Write text (UTF-8) or bytes to ``path`` atomically."""
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def atomic_write_json(
    path: str | os.PathLike, obj: Any, indent: int | None = 2, fsync: bool = False, **dumps_kwargs
) -> None:
    atomic_write(path, json.dumps(obj, indent=indent, **dumps_kwargs) + "\n", fsync=fsync)


@contextmanager
def atomic_dir(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced only with ``overwrite=True`` (``FileExistsError`` otherwise).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: already exists (pass overwrite=True to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _honour_umask(tmp, directory=True)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", suffix=".tmp", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---------------------------------------------------------------------------------------------------
# output folders: claimed by one tool, locked by one process at a time

OUTPUT_MARKER = ".emotionclip-output.json"  # says which tool made the folder: only those are written into
LOCK_NAME = ".emotionclip.lock"
LOCK_OWNER = (
    ".emotionclip.lock.owner"  # pid + tool of the holder (the lock file itself is truncated by contenders)
)


def is_output_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder some emotionclip tool made (it carries the marker file)."""
    return (Path(path) / OUTPUT_MARKER).is_file()


def input_files(folder: str | os.PathLike) -> list[Path]:
    """Every file under ``folder``, recursively, except inside emotionclip's own output folders: an
    ``--out`` placed inside the input folder (``analyze n --out n/results``) must never be read back
    as input (its video proxies, report PNGs and thumbnails). Unsorted; symlinked folders not followed."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        if OUTPUT_MARKER in files:
            dirs[:] = []
            continue
        found.extend(p for p in (Path(root) / name for name in files) if p.is_file())
    return found


class OutputDirError(FileError):
    """An output folder cannot be used: it is a file, holds a user's files, or another process writes it."""


def _holder(owner_file: Path) -> str:
    try:
        owner = json.loads(owner_file.read_text())
        return f"pid {owner['pid']} ({owner.get('tool', '?')})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def claim_output_dir(
    path: str | os.PathLike,
    tool: str,
    allow: tuple[str, ...] = (),
    create: bool = True,
    shared: bool = False,
    part: str | None = None,
) -> Iterator[Path]:
    """Hold ``path`` as ``tool``'s output folder for the body of the ``with``.

    * a new or empty folder is created and marked as ``tool``'s (``.emotionclip-output.json``);
    * a folder marked by ``tool`` (or a tool in ``allow``) is re-opened (resume, add more inputs);
    * a file, a non-empty folder without the marker, or another tool's folder is refused
      (:class:`OutputDirError` naming it), so nothing of the user's is overwritten;
    * an exclusive lock (``.emotionclip.lock``, released when the process dies) keeps a second
      process out: it gets :class:`OutputDirError` naming the holder's pid;
    * ``shared=True`` takes a shared lock instead, for cooperating writers (``prepare --part`` jobs
      writing one folder): they exclude an exclusive holder, not each other;
    * with ``part`` (a slice of a job split over processes, :mod:`emotionclip.jobs`) the lock is
      that part's, so the parts of one job share the folder while a second process for the same
      part is kept out.
    """
    from filelock import FileLock, Timeout

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(folder, "is a file, not a folder; choose a folder for the outputs")
    marker = folder / OUTPUT_MARKER
    if folder.is_dir() and not marker.is_file():
        # only locks (of any part), their owners and temporaries: another process is claiming it
        if any(
            not (p.name.lstrip(".").startswith(LOCK_NAME[1:]) or p.name.startswith(f".{OUTPUT_MARKER}."))
            for p in folder.iterdir()
        ):
            raise OutputDirError(
                folder, f"holds files that `emotionclip {tool}` did not write; choose an empty or new folder"
            )
    elif marker.is_file():
        try:
            made_by = json.loads(marker.read_text()).get("tool")
        except (OSError, ValueError, AttributeError):
            made_by = None
        if made_by not in (tool, *allow):
            raise OutputDirError(folder, f"is the output folder of `emotionclip {made_by}`, not of `{tool}`")
    if not folder.exists():
        if not create:
            raise OutputDirError(folder, "does not exist")
        folder.mkdir(parents=True, exist_ok=True)  # another part may create it at the same moment
    if shared:
        yield from _hold_shared(folder, marker, tool)
        return
    lock_name = LOCK_NAME if part is None else f"{LOCK_NAME}.{part}"
    owner_file = folder / (LOCK_OWNER if part is None else f"{lock_name}.owner")
    lock = FileLock(str(folder / lock_name), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise OutputDirError(
            folder, f"is being written by {_holder(owner_file)}; wait for it or choose another folder"
        ) from None
    try:
        atomic_write_json(owner_file, {"pid": os.getpid(), "tool": tool})
        if not marker.is_file():
            atomic_write_json(marker, {"tool": tool, "format": 1})
        yield folder
    finally:
        owner_file.unlink(missing_ok=True)
        lock.release()


def _hold_shared(folder: Path, marker: Path, tool: str) -> Iterator[Path]:
    import fcntl

    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirError(
                folder,
                f"is being written by {_holder(folder / LOCK_OWNER)}; wait for it or choose another folder",
            ) from None
        if not marker.is_file():
            atomic_write_json(marker, {"tool": tool, "format": 1})
        yield folder
    finally:
        os.close(fd)  # releases the lock
