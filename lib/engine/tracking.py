"""MLflow tracking on rank 0, off the training's critical path: one run per training run, never fatal.

`start_tracking` returns at once. A background thread (lib.engine.tracking_worker) imports
mlflow, opens the store, creates or continues the run and sends what the trainer hands it
through a queue, from `Tracker.begin` on (the trainer calls it after its first optimizer step,
so that none of this competes with the start of training); the trainer never waits for it,
except at the end of a run, and then only
while the store keeps answering (a request gets mlflow.timeout_s, a store that does not answer
in time or refuses is given up at once). Metrics that could not be sent are kept in the run
directory's mlflow_spool.jsonl and sent when the store answers again, later in the run or when
the run resumes. A resumed run continues its MLflow run and drops every metric value at a step
the run already holds for that metric (a resume repeats the steps after its checkpoint bit for
bit, so nothing is lost and nothing is logged twice). A run seeded from another run directory's
checkpoint gets a new MLflow run (unless checkpoint.new_mlflow_run is false), tagged with its parent's run id
and checkpoint and with the seed controls (lib.engine.seed_controls).
"""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Mapping

from lib.config import flatten_config
from lib.engine.tracking_worker import MetricEntry, TrackingTarget, TrackingWorker

log = logging.getLogger(__name__)

PARENT_RUN_TAG, PARENT_CHECKPOINT_TAG = "parent_run_id", "parent_checkpoint"
"""Tags of an MLflow run seeded from another run directory's checkpoint."""


class Tracker:
    """Hands tracking calls to a TrackingWorker; a Tracker without one (`Tracker()`) does nothing."""

    def __init__(self, worker: TrackingWorker | None = None) -> None:
        self._worker = worker
        self._ended_run_id: str | None = None

    @property
    def active(self) -> bool:
        """True until `end`, when an MLflow run is being written."""
        return self._worker is not None

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id once known (at once when continuing a run; kept after `end`), else None."""
        return self._worker.run_id if self._worker is not None else self._ended_run_id

    def begin(self) -> None:
        """Let tracking import mlflow and send what waits: call it once training runs (after its first step)."""
        if self._worker is not None:
            self._worker.begin()

    def log_params(self, config: Mapping[str, Any]) -> None:
        """Queue the flattened config as params (keys the run already has are kept as they are)."""
        if self._worker is not None:
            self._worker.submit("params", {key: str(value) for key, value in flatten_config(config).items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queue scalar metrics at `step` (the global optimizer step)."""
        if self._worker is not None:
            timestamp = int(time.time() * 1000)
            self._worker.submit("metrics", [MetricEntry(key, float(value), timestamp, step)
                                            for key, value in metrics.items()])

    def log_artifacts(self, paths: list[Path]) -> None:
        """Queue the upload of the files and directories among `paths` that exist then."""
        if self._worker is not None:
            self._worker.submit("artifacts", [Path(path) for path in paths])

    def end(self, status: str) -> None:
        """Mark the run FINISHED, FAILED or KILLED and stop tracking: waits while the store answers (KILLED: at
        most mlflow.timeout_s); what is still unsent then stays in the spool file."""
        if self._worker is not None:
            self._worker.finish(status)
            self._ended_run_id, self._worker = self._worker.run_id, None


def _artifact_location(tracking_uri: str, save_dir: Path) -> str | None:
    """Artifacts of a local store go beside it (save_dir/mlartifacts), not into ./mlruns."""
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    return (save_dir / "mlartifacts").resolve().as_uri() if local_store else None


def start_tracking(cfg: Any, config: Mapping[str, Any], resume_run_id: str | None, is_main: bool,
                   tags: Mapping[str, str] | None = None) -> Tracker:
    """Start tracking the run of `cfg` in the background: continue the MLflow run `resume_run_id` (else the one
    the run directory recorded), else create one; either way tagged with mlflow.tags and the `tags` (a seeded
    run's PARENT_RUN_TAG, PARENT_CHECKPOINT_TAG and seed controls).

    Returns an inactive Tracker off rank 0 and when mlflow.enabled is false. Never blocks.
    """
    if not is_main or not cfg.mlflow.enabled:
        return Tracker()
    save_dir = Path(cfg.checkpoint.save_dir)
    tracking_uri = cfg.mlflow.resolve_tracking_uri(save_dir)
    # MLflow reads these at every request; set here, on the training thread (setenv is not thread-safe)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(cfg.mlflow.timeout_s)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    target = TrackingTarget(
        tracking_uri=tracking_uri, experiment=cfg.mlflow.experiment, run_name=cfg.checkpoint.run_name,
        artifact_location=_artifact_location(tracking_uri, save_dir), resume_run_id=resume_run_id,
        tags={**cfg.mlflow.tags, **(tags or {})}, timeout_s=cfg.mlflow.timeout_s,
        run_dir=save_dir / cfg.checkpoint.run_name,
    )
    worker = TrackingWorker(target)
    worker.start()
    tracker = Tracker(worker)
    tracker.log_params(config)
    return tracker
