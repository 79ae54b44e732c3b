"""The one way files are written: atomically.

A writer fills a temporary file in the target's directory; the file is flushed to disk
(fsync), renamed over the target (os.replace) and the directory entry is flushed too, so a
crash leaves either the old file or the new one, never a partial one. The temporary file
is removed on any failure.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"
"""Temporary files are named .<target name>.<random><TEMPORARY_SUFFIX> next to the target."""
_FILE_MODE = 0o644


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Create or replace `path` with what `write(tmp)` writes into the temporary file `tmp`.

    The parent directory is created when missing. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _FILE_MODE)
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Copy the file `source` to `path` atomically."""
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp))


def temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Temporary files that interrupted atomic writes left in `directory` (e.g. after kill -9)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file())
