"""The one way files are written: atomically.

A writer fills a temporary file in the target's directory; the file is flushed to disk
(fsync), renamed over the target (os.replace) and the directory entry is flushed too, so a
crash leaves either the old file or the new one, never a partial one. The temporary file
is removed on any failure. A write that fails on a full disk or quota raises DiskFullError,
which says what was written where, how much of it, and how much space is free.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

TEMPORARY_SUFFIX = ".tmp"
"""Temporary files are named .<target name>.<random><TEMPORARY_SUFFIX> next to the target."""
_FILE_MODE = 0o644
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE_BYTES = 1 << 20
"""A write that fails without an errno (torch.save wraps ENOSPC in a RuntimeError such as "basic_ios::clear:
iostream error") counts as disk-full when less than this is free where it was writing."""


class DiskFullError(OSError):
    """A write failed because the file system (or the quota) is full; str() is a one-line message."""

    def __str__(self) -> str:
        return self.strerror


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    value = float(n_bytes)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


def _disk_full(error: BaseException, path: Path, tmp: Path, what: str) -> DiskFullError | None:
    """DiskFullError for a failed write of `path` through `tmp` when the disk or quota is full, else None."""
    code = getattr(error, "errno", None)
    try:
        free = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if code not in _DISK_FULL_ERRNOS:
        wrapped = isinstance(error, Exception) and not isinstance(error, OSError)  # e.g. torch.save's RuntimeError
        if not (wrapped and free is not None and free < LOW_SPACE_BYTES):
            return None
    written = tmp.stat().st_size if tmp.exists() else 0
    cause = "disk quota exceeded" if code == errno.EDQUOT else "no space left on device"
    free_text = "unknown" if free is None else _size(free)
    message = (f"{cause} while writing {what} {path}: {_size(written)} written when it failed, {free_text} free "
               f"in {path.parent}; free some space there (or write somewhere else) and run again")
    return DiskFullError(code if code in _DISK_FULL_ERRNOS else errno.ENOSPC, message, str(path))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], what: str = "file",
                 replace: bool = True) -> Path:
    """Create or replace `path` with what `write(tmp)` writes into the temporary file `tmp`.

    The parent directory is created when missing. Returns the path written. `what` names the
    content in the DiskFullError raised when the disk or quota is full (e.g. "checkpoint").
    `replace=False` only creates: FileExistsError (and nothing changed) when `path` exists by then.
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
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
            tmp.unlink()
    except BaseException as error:
        disk_full = _disk_full(error, path, tmp, what)
        tmp.unlink(missing_ok=True)
        if disk_full is not None:
            raise disk_full from error
        raise
    _fsync_path(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), what)


def atomic_copy(source: str | os.PathLike, path: str | os.PathLike, what: str = "file") -> Path:
    """Copy the file `source` to `path` atomically."""
    return atomic_write(path, lambda tmp: shutil.copyfile(source, tmp), what)


def temporary_files(directory: str | os.PathLike) -> list[Path]:
    """Temporary files that interrupted atomic writes left in `directory` (e.g. after kill -9)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(f".*{TEMPORARY_SUFFIX}") if p.is_file())
