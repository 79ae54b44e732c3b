"""The job's time budget: time limit, checkpoint signal and the trainer's grace, from one knob.

`slurm.signal_delay_s` (D) is the one knob. SLURM signals the job D seconds before its time
limit; the job wrapper then asks the trainer to write last.pt and waits `checkpoint_grace_s(D)`
(D minus a margin for requeueing before the limit). Under torchrun the agent gets the same grace
(TORCH_ELASTIC_SHUTDOWN_TIMEOUT, set by jobs.launch): on a signal it relays, it kills workers
that have not exited after that long (30 s by default, less than the trainer may need).
A time limit of 0 means no limit, on SLURM and locally.
"""
from __future__ import annotations

from jobs.knobs import JobError, slurm_time_minutes, slurm_time_seconds

REQUEUE_MARGIN_S = 15
"""Seconds kept between the end of the trainer's grace and the time limit (requeue, SLURM's own kill)."""
MIN_GRACE_S = 10
"""The least the trainer is given to write last.pt, however short the signal delay."""
MIN_TRAINING_S = 60
"""The least a job must train before its checkpoint signal."""
LOCAL_NO_LIMIT_MIN = 100 * 365 * 24 * 60
"""Time limit handed to submitit's local executor for TIME=0 (it has no "no limit")."""


def checkpoint_grace_s(signal_delay_s: int) -> int:
    """Seconds the trainer (and torchrun's agent) get to write last.pt and exit after the signal."""
    return max(signal_delay_s - REQUEUE_MARGIN_S, MIN_GRACE_S)


def _clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def check_time_limit(time: str, signal_delay_s: int, where: str) -> None:
    """Refuse a time limit that leaves too little training before the checkpoint signal.

    The job must train at least as long as it reserves for stopping (and at least
    MIN_TRAINING_S); otherwise each allocation goes to start-up and checkpointing and the run
    requeues over and over without progress. Refusing (rather than shrinking the delay) keeps
    the trainer's grace what the user chose; the message says which of the two to change.
    """
    limit_s = slurm_time_seconds(time)
    if limit_s == 0:
        return
    needed_s = signal_delay_s + max(signal_delay_s, MIN_TRAINING_S)
    if limit_s >= needed_s:
        return
    advice = f"set TIME to at least {_clock(needed_s)}"
    largest_delay_s = min(limit_s // 2, limit_s - MIN_TRAINING_S)
    if largest_delay_s >= MIN_GRACE_S + REQUEUE_MARGIN_S:
        advice += f", or lower the delay (--set slurm.signal_delay_s={largest_delay_s} or less)"
    raise JobError(f"{where}: TIME (slurm.time) = {time} ({limit_s} s) is too short for slurm.signal_delay_s = "
                   f"{signal_delay_s}: the checkpoint signal would come after {limit_s - signal_delay_s} s of the job, "
                   f"and it must come after at least {needed_s - signal_delay_s} s; {advice}")


def local_timeout_min(time: str) -> int:
    """The local executor's time limit in minutes for slurm.time, rounded up as SLURM does (TIME=0: no limit)."""
    return slurm_time_minutes(time) or LOCAL_NO_LIMIT_MIN
