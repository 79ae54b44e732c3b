"""MLflow tracking on rank 0: one run per training run, continued on resume, never fatal.

mlflow is imported only here and only when a run is actually started (rank 0, mlflow.enabled).
Any tracking failure logs a warning and switches tracking off; training goes on and the
metrics stay in training_history.json.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

from lib.config import flatten_config

log = logging.getLogger(__name__)

BATCH_SIZE = 100  # MLflow's limit on params / metrics per log_batch request that all stores accept


class Tracker:
    """Thin wrapper of an MLflow run; a Tracker without a run (`Tracker()`) does nothing."""

    def __init__(self, client: Any = None, run_id: str | None = None) -> None:
        self._client = client
        self.run_id = run_id

    @property
    def active(self) -> bool:
        """True while an MLflow run is being written."""
        return self._client is not None

    def _call(self, what: str, action: Callable[[], None]) -> None:
        if self._client is None:
            return
        try:
            action()
        except Exception as exc:  # a tracking outage must not stop training
            log.warning("MLflow %s failed (%s: %s); tracking is off for the rest of this run",
                        what, type(exc).__name__, exc)
            self._client = None

    def log_params(self, config: Mapping[str, Any]) -> None:
        """Log the flattened config as params (values truncated to MLflow's limit); keys already logged are kept."""
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

        def action() -> None:
            existing = self._client.get_run(self.run_id).data.params
            params = [
                Param(key[:MAX_ENTITY_KEY_LENGTH], str(value)[:MAX_PARAM_VAL_LENGTH])
                for key, value in flatten_config(config).items() if key[:MAX_ENTITY_KEY_LENGTH] not in existing
            ]
            for start in range(0, len(params), BATCH_SIZE):
                self._client.log_batch(self.run_id, params=params[start:start + BATCH_SIZE])

        self._call("log_params", action)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log scalar metrics at `step` (the global optimizer step)."""
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        entries = [Metric(key, float(value), timestamp, step) for key, value in metrics.items()]

        def action() -> None:
            for start in range(0, len(entries), BATCH_SIZE):
                self._client.log_batch(self.run_id, metrics=entries[start:start + BATCH_SIZE])

        self._call("log_metrics", action)

    def log_artifacts(self, paths: list[Path]) -> None:
        """Upload files and directories that exist (directories keep their name)."""
        def action() -> None:
            for path in paths:
                if path.is_file():
                    self._client.log_artifact(self.run_id, str(path))
                elif path.is_dir():
                    self._client.log_artifacts(self.run_id, str(path), artifact_path=path.name)

        self._call("log_artifacts", action)

    def end(self, status: str) -> None:
        """Mark the run FINISHED, FAILED or KILLED and stop tracking."""
        self._call("set_terminated", lambda: self._client.set_terminated(self.run_id, status=status))
        self._client = None


def _experiment_id(client: Any, name: str, tracking_uri: str, save_dir: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    local_store = tracking_uri.startswith(("sqlite:", "file:")) or "://" not in tracking_uri
    location = (save_dir / "mlartifacts").resolve().as_uri() if local_store else None
    return client.create_experiment(name, artifact_location=location)


def start_tracking(cfg: Any, config: Mapping[str, Any], resume_run_id: str | None, is_main: bool) -> Tracker:
    """Open (or, with `resume_run_id`, continue) the MLflow run of this training run.

    Returns an inactive Tracker off rank 0, when mlflow.enabled is false, or when the
    tracking store cannot be reached (with a warning).
    """
    if not is_main or not cfg.mlflow.enabled:
        return Tracker()
    save_dir = Path(cfg.checkpoint.save_dir)
    tracking_uri = cfg.mlflow.resolve_tracking_uri(save_dir)
    try:
        from mlflow.tracking import MlflowClient

        save_dir.mkdir(parents=True, exist_ok=True)
        client = MlflowClient(tracking_uri=tracking_uri)
        run_id = None
        if resume_run_id:
            try:
                client.update_run(resume_run_id, status="RUNNING")
                run_id = resume_run_id
            except Exception as exc:
                log.warning("MLflow run %s from the checkpoint not found in %s (%s); starting a new run",
                            resume_run_id, tracking_uri, exc)
        if run_id is None:
            experiment_id = _experiment_id(client, cfg.mlflow.experiment, tracking_uri, save_dir)
            run_id = client.create_run(experiment_id, run_name=cfg.checkpoint.run_name).info.run_id
    except Exception as exc:
        log.warning("MLflow tracking at %s is unavailable (%s: %s); training without it, metrics go to "
                    "training_history.json", tracking_uri, type(exc).__name__, exc)
        return Tracker()
    tracker = Tracker(client, run_id)
    tracker.log_params(config)
    log.info("MLflow run %s at %s (%s)", run_id, tracking_uri, "continued" if run_id == resume_run_id else "new")
    return tracker
