"""Preemption: SIGUSR1 / SIGTERM ask the trainer to checkpoint and stop at the next optimizer step.

SLURM sends the signal ahead of the time limit (`--signal`, slurm.signal_delay_s) or on
preemption; the trainer then writes checkpoints/last.pt and raises `Preempted`, and the
entry point exits with PREEMPTED_EXIT_CODE so the job wrapper requeues it.
"""
from __future__ import annotations

import logging
import signal
import threading


log = logging.getLogger(__name__)

SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class Preempted(Exception):
    """Training stopped on a preemption signal; last.pt holds the position to resume from."""


class PreemptionFlag:
    """Set by SIGUSR1 / SIGTERM once `install()` ran (main thread only; a no-op elsewhere)."""

    def __init__(self) -> None:
        self.requested = False

    def install(self) -> None:
        """Route the preemption signals to this flag."""
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in SIGNALS:
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame) -> None:
        if not self.requested:
            log.warning("received %s: writing last.pt and stopping after the current step",
                        signal.Signals(signum).name)
        self.requested = True
