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


TEMP_PATTERN = ".*.tmp"  # what atomic_path's temporary files look like


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
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in ``folder`` (``.NAME.*.tmp``)."""
    removed = [p for p in Path(folder).glob(TEMP_PATTERN) if p.is_file()]
    for p in removed:
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
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
