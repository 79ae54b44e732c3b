"""Helpers of the real-SLURM job-suite tests: queue look-ups, submission environment, waiting."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from jobs.executors import queue_states

REPO = Path(__file__).resolve().parents[2]
STANDIN = "tests.slurm.standin_trainer"
WAIT_S = 300


def queue_listing() -> str:
    """Every job id squeue knows (any state)."""
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout


def slurm_env(**extra: str) -> dict[str, str]:
    """Environment of a wrapper script submitting to SLURM, CPU-only, with this interpreter."""
    return {**os.environ, "PYTHON": sys.executable, "EXECUTOR": "slurm", "CPU_PROCS": "1", **extra}


def records(run_dir: Path) -> list[dict]:
    """The run's jobs.json."""
    return json.loads((run_dir / "jobs.json").read_text())


def job_state(job_id: str) -> str:
    """The job's state in squeue ("" once it left the queue)."""
    return queue_states([job_id]).get(job_id, ("",))[0]


def wait_for(predicate, what: str, timeout_s: float = WAIT_S, poll_s: float = 0.2):
    """Poll `predicate` until it returns something true; fail after `timeout_s` with the queue shown."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}; queue:\n{queue_listing()}")


def running_until(job_id: str, run_dir: Path, path: Path):
    """A predicate for wait_for: `path` exists, while the job is still PENDING or RUNNING."""
    def check() -> bool:
        state = job_state(job_id)
        assert state in {"PENDING", "RUNNING"}, f"job {job_id} is {state!r}: {sorted((run_dir / 'logs').iterdir())}"
        return path.exists()

    return check
