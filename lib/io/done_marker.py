"""The DONE marker: a run directory's proof that its training finished successfully.

The training entry point writes it once training and its final evaluation are done (rank 0);
the job suite only reads it (a finished run is not resubmitted; status reports it).
"""
from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from pathlib import Path

from lib.io.atomic import atomic_write_text
from lib.io.run_files import DONE_NAME

JOB_ID_VARIABLES = ("SLURM_JOB_ID", "SUBMITIT_LOCAL_JOB_ID", "SUBMITIT_DEBUG_JOB_ID")
"""Environment variables naming the job a process runs in, in order of preference (SLURM, then submitit's)."""


def job_id(environ: Mapping[str, str] = os.environ) -> str:
    """The id of the job this process runs in, or "local pid N" outside any job."""
    for name in JOB_ID_VARIABLES:
        if environ.get(name):
            return environ[name]
    return f"local pid {os.getpid()}"


def write_done_marker(run_dir: str | os.PathLike) -> Path:
    """Write run_dir/DONE atomically: which job finished the run, and when (UTC)."""
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    return atomic_write_text(Path(run_dir) / DONE_NAME, f"job {job_id()} finished {stamp}\n")
