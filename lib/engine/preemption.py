"""Preemption: SIGUSR1, SIGTERM and Ctrl-C (SIGINT) ask the trainer to checkpoint and stop.

SLURM sends the signal ahead of the time limit (`--signal`, slurm.signal_delay_s) or on
preemption; the trainer then writes checkpoints/last.pt at the next optimizer step (or keeps
the last.pt it wrote before validation, when the signal comes during validation) and raises
`Preempted`, and the entry point exits with PREEMPTED_EXIT_CODE so the job wrapper requeues it.
Ctrl-C is handled the same way; a second Ctrl-C stops at once without saving.
"""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """Training stopped on a preemption signal; last.pt holds the position to resume from."""


class PreemptionFlag:
    """Set by SIGUSR1 / SIGTERM / SIGINT between `install()` and `uninstall()` (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Route the preemption signals to this flag."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        """Give the signals back to the handlers they had before `install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        if signum == signal.SIGINT and self.requested:
            raise KeyboardInterrupt
        if not self.requested:
            again = " (Ctrl-C again stops at once, without saving)" if signum == signal.SIGINT else ""
            log.warning("received %s: writing last.pt and stopping after the current step%s",
                        signal.Signals(signum).name, again)
        self.requested = True
