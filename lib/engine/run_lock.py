"""One trainer per run directory: an exclusive flock on <run dir>/.lock, held while the run trains.

Rank 0 takes the lock before it writes anything into the run directory and keeps it until the
run ends; the operating system releases it when the process dies, however it dies, so a crashed
or killed run never locks out its resume. A second trainer on the same directory is refused at
once (RunDirBusyError, exit code 2) with the holder's pid, host and start time, which the holder
writes into the lock file.

The lock file is the one file not written through lib.io.atomic: flock locks an inode, and an
atomic replace would put a new, unlocked inode in its place. It is never deleted either (deleting
a lock file lets two processes lock two different inodes of the same name), except when the run
failed before writing anything else into a directory it created: then the directory goes again.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import socket
from pathlib import Path

from lib.engine.distributed import DistInfo, broadcast_object
from lib.engine.rundir import RunDirError
from lib.io.run_files import LOCK_NAME

log = logging.getLogger(__name__)


class RunDirBusyError(RunDirError):
    """Another process holds the run directory's lock."""


def _holder_line() -> str:
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return f"pid {os.getpid()} on host {socket.gethostname()}, started {started}\n"


class RunDirLock:
    """The lock of one run directory, taken on rank 0 (every rank learns whether it was granted)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._created_dir = False

    def _try_lock(self) -> str | None:
        """Take the lock; None when granted, else why not (naming the holder)."""
        try:
            self._created_dir = not self.path.parent.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            return (f"cannot create {self.path} ({type(exc).__name__}: {exc.strerror or exc}); make "
                    "checkpoint.save_dir a writable directory or choose another one")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "a process that has not said who it is"
            os.close(fd)
            return (f"run directory {self.path.parent} is in use by another trainer ({holder}); nothing was "
                    "changed. Wait for it to end (or stop it), or choose another checkpoint.run_name")
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_line().encode(), 0)
        self._fd = fd
        return None

    def acquire(self, dist: DistInfo) -> None:
        """Take the lock on rank 0; RunDirBusyError on every rank when another process holds it."""
        refusal = self._try_lock() if dist.is_main else None
        refusal = broadcast_object(refusal)
        if refusal:
            raise RunDirBusyError(refusal)
        if dist.is_main:
            log.debug("locked %s", self.path)

    def release(self) -> None:
        """Give the lock back (closing the file releases it). The file stays, unless this run created the
        run directory and wrote nothing else into it (a run refused before it started leaves nothing)."""
        if self._fd is None:
            return
        run_dir = self.path.parent
        if self._created_dir and [p.name for p in run_dir.iterdir()] == [LOCK_NAME]:
            self.path.unlink()
            run_dir.rmdir()
        os.close(self._fd)
        self._fd = None
