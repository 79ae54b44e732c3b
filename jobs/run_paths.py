"""The run directory as the job suite sees it: where a run's files are, without importing torch.

The trainer (lib.engine, lib.engine.run) writes config.yaml, checkpoints/, train.log,
training_history.json, encoder_best.pt and DONE; the job suite adds logs/ (submitit's
per-job stdout/stderr, named with the job id), jobs.json (one record per submission) and
submit.lock (held while a submission writes into the run directory).
tests/jobs/test_knobs.py checks that these names agree with lib's.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.io.atomic import atomic_write_text
from lib.io.run_files import (  # noqa: F401 (re-exported for the job suite)
    CHECKPOINT_DIR, CONFIG_NAME, DONE_NAME, ENCODER_EXPORT_NAME, HISTORY_NAME, LAST_NAME, LOG_NAME,
)
LOGS_DIR = "logs"
JOBS_NAME = "jobs.json"
SUBMIT_LOCK_NAME = "submit.lock"
"""Locked (flock) by a submission while it writes into the run directory and records its job."""


@dataclass(frozen=True)
class RunPaths:
    """Paths of one run directory `<save_dir>/<run_name>`."""

    run_dir: Path

    @classmethod
    def of(cls, cfg: Any) -> RunPaths:
        """Layout of a resolved config's run directory."""
        return cls(Path(cfg.checkpoint.save_dir) / cfg.checkpoint.run_name)

    @property
    def config(self) -> Path:
        return self.run_dir / CONFIG_NAME

    @property
    def logs(self) -> Path:
        return self.run_dir / LOGS_DIR

    @property
    def last_checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_DIR / LAST_NAME

    @property
    def history(self) -> Path:
        return self.run_dir / HISTORY_NAME

    @property
    def train_log(self) -> Path:
        return self.run_dir / LOG_NAME

    @property
    def done(self) -> Path:
        return self.run_dir / DONE_NAME

    @property
    def jobs(self) -> Path:
        return self.run_dir / JOBS_NAME

    @property
    def submit_lock(self) -> Path:
        return self.run_dir / SUBMIT_LOCK_NAME

    @property
    def encoder_export(self) -> Path:
        return self.run_dir / ENCODER_EXPORT_NAME

    def artifacts(self, kind: str) -> dict[str, Path]:
        """{description: path} of what a finished run of `kind` ("mae" or "reg") leaves behind."""
        paths = {
            "resolved config": self.config,
            "job logs (stdout/stderr per job id)": self.logs,
            "last checkpoint": self.last_checkpoint,
            "training history": self.history,
            "training log": self.train_log,
            "finished marker": self.done,
        }
        if kind == "mae":
            paths["exported encoder"] = self.encoder_export
        return paths

    def read_jobs(self) -> list[dict[str, Any]]:
        """The submission records of jobs.json (empty when there is none)."""
        if not self.jobs.is_file():
            return []
        return json.loads(self.jobs.read_text(encoding="utf-8"))

    def add_job(self, record: dict[str, Any]) -> None:
        """Append one submission record to jobs.json (atomic rewrite)."""
        records = [*self.read_jobs(), record]
        atomic_write_text(self.jobs, json.dumps(records, indent=1))
