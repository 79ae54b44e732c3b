"""`status RUN`: job ids and states, the last log lines and the artifacts present; run summaries.

Job states come from squeue, else sacct, else the run directory (DONE marker, submitit's
result file, a live local process). For an unfinished run, the trainer's own last ERROR line
(its one-line cause) comes before the log tails, which end with the job wrapper's traceback.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections import deque
from pathlib import Path
from typing import Any

from jobs.executors import queue_states
from jobs.knobs import JobError
from jobs.run_paths import RunPaths

HEADLINE_METRICS = 6
"""Validation metrics shown per run in a summary."""
_TRAINER_ERROR = re.compile(r"\bERROR (lib\.[\w.]+): (.+)$")
"""An error logged by the trainer (lib.engine.run's format: `<time> ERROR <logger>: <message>`)."""


def find_run(run: str, save_dir: str) -> RunPaths:
    """The run directory named `run` (a path, or a run name under `save_dir`)."""
    for candidate in (Path(run), Path(save_dir) / run):
        if candidate.is_dir():
            return RunPaths(candidate)
    raise JobError(f"no run directory {run!r} (looked at {run} and {Path(save_dir) / run}); pass a run name "
                   "under --save-dir or the path of a run directory")


def _sacct_state(job_id: str) -> str | None:
    if shutil.which("sacct") is None:
        return None
    result = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"],
                            capture_output=True, text=True, timeout=60)
    states = result.stdout.split()
    return states[0] if result.returncode == 0 and states else None


def _local_state(layout: RunPaths, record: dict[str, Any]) -> str:
    try:
        os.kill(int(record["job_id"]), 0)
        return "RUNNING"
    except (ProcessLookupError, ValueError):
        pass
    except PermissionError:
        return "RUNNING"
    result = Path(record["logs"]) / f"{record['job_id']}_0_result.pkl"
    if layout.done.exists():
        return "COMPLETED"
    return "FAILED" if result.exists() else "ENDED"


def job_state(layout: RunPaths, record: dict[str, Any], queue: dict[str, tuple[str, str]]) -> str:
    """State of one submitted job: squeue, else sacct, else what the run directory shows."""
    if record["executor"] == "local":
        return _local_state(layout, record)
    job_id = record["job_id"]
    if job_id in queue:
        state, reason = queue[job_id]
        return f"{state} ({reason})" if reason and reason != "None" else state
    state = _sacct_state(job_id)
    if state:
        return state
    return "COMPLETED (DONE marker)" if layout.done.exists() else "not in the queue any more"


def _tail(path: Path, lines: int) -> list[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        return list(deque(handle, maxlen=lines))


def trainer_error(paths: list[Path]) -> str | None:
    """The trainer's last ERROR line in the first of `paths` that has one: "<message> (<logger>, <file>)"."""
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as handle:
            matches = [match for line in handle if (match := _TRAINER_ERROR.search(line.rstrip("\n")))]
        if matches:
            return f"{matches[-1].group(2)} ({matches[-1].group(1)}, {path})"
    return None


def headline(layout: RunPaths) -> str:
    """The last epoch's record of training_history.json in one line (epoch, step and validation metrics)."""
    if not layout.history.is_file():
        return "no training_history.json yet"
    records = json.loads(layout.history.read_text(encoding="utf-8"))
    if not records:
        return "no finished epoch yet"
    last = records[-1]
    shown = {key: last[key] for key in ("epoch", "global_step") if key in last}
    metrics = [key for key in last if key.startswith("val/")] or [key for key in last if key.startswith("train/")]
    metrics.sort(key=lambda key: not key.endswith("/loss"))  # the total loss first
    shown.update({key: last[key] for key in metrics[:HEADLINE_METRICS]})
    return ", ".join(f"{key} {value:.5g}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in shown.items())


def artifact_lines(layout: RunPaths, kind: str) -> list[str]:
    """One line per expected artifact: present or missing, with its path."""
    return [f"  [{'x' if path.exists() else ' '}] {what}: {path}" for what, path in layout.artifacts(kind).items()]


def summary(layout: RunPaths, kind: str) -> list[str]:
    """Run directory, finished or not, artifacts and headline numbers of one run."""
    finished = "finished" if layout.done.exists() else "NOT finished"
    return [f"run {layout.run_dir.name} ({finished}): {layout.run_dir}", *artifact_lines(layout, kind),
            f"  headline: {headline(layout)}"]


def status_report(run: str, save_dir: str, lines: int) -> str:
    """The text of `status RUN`."""
    layout = find_run(run, save_dir)
    records = layout.read_jobs()
    kind = records[-1]["kind"] if records else "mae"
    queue = queue_states([r["job_id"] for r in records if r["executor"] == "slurm"])
    out = [f"run {layout.run_dir.name}: {layout.run_dir}", "jobs:"]
    out += [f"  {r['job_id']} ({r['executor']}, submitted {r['submitted']}"
            f"{', after ' + r['after'] if r.get('after') else ''}): {job_state(layout, r, queue)}" for r in records]
    if not records:
        out.append("  none recorded (no jobs.json)")
    out.append("artifacts:")
    out += artifact_lines(layout, kind)
    out.append(f"headline: {headline(layout)}")
    logs = [layout.train_log] if layout.train_log.is_file() else []
    if records:
        job_log = Path(records[-1]["logs"]) / f"{records[-1]['job_id']}_0_log.err"
        logs += [job_log] if job_log.is_file() else []
    cause = None if layout.done.exists() else trainer_error(logs[::-1])  # the last job's own log first
    if cause is not None:
        out.insert(1, f"trainer error: {cause}")
    for path in logs:
        out.append(f"last {lines} lines of {path}:")
        out += ["  " + line.rstrip("\n") for line in _tail(path, lines)]
    return "\n".join(out)
