"""The thread behind lib.engine.tracking.Tracker: it alone imports mlflow and talks to the store.

Operations ("params", "metrics", "artifacts", "end") wait in a queue and are sent in order; an
operation leaves the queue only once the store has taken it, so a store that stops answering
holds everything after it. While the store does not answer, the metrics waiting in the queue
are written to the spool file after every failed attempt and the head is tried again after 1,
2, 4 ... 60 s. Every operation can be repeated without harm: params the run already has are
skipped, metrics at a step the run already holds for their key are dropped, artifacts are
overwritten. That makes the spool safe to replay and a resumed run free of duplicates.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

from lib.io.atomic import atomic_write_text
from lib.io.run_files import MLFLOW_RUN_ID_NAME, MLFLOW_SPOOL_NAME

log = logging.getLogger("lib.engine.tracking")

BATCH_SIZE = 100
"""MLflow's limit on params / metrics per log_batch request that all stores accept."""
MAX_RETRY_DELAY_S = 60
STALL_SLACK_S = 1.0
"""A request is given up when it has run this much longer than mlflow.timeout_s."""
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


class MetricEntry(NamedTuple):
    """One metric value as MLflow stores it (timestamp in ms since the epoch)."""

    key: str
    value: float
    timestamp: int
    step: int


@dataclass(frozen=True)
class TrackingTarget:
    """Where and how a run is tracked."""

    tracking_uri: str
    experiment: str
    run_name: str
    artifact_location: str | None
    resume_run_id: str | None
    timeout_s: int
    run_dir: Path
    tags: dict[str, str] = field(default_factory=dict)
    """Tags of a new run (a continued run keeps its own)."""

    @property
    def spool_path(self) -> Path:
        """Where the metrics not sent yet wait."""
        return self.run_dir / MLFLOW_SPOOL_NAME


def recorded_run_id(run_dir: Path) -> str | None:
    """The MLflow run a run directory created (recorded at once; its checkpoints record it only later)."""
    path = Path(run_dir) / MLFLOW_RUN_ID_NAME
    return (path.read_text(encoding="utf-8").strip() or None) if path.is_file() else None


def read_spool(path: Path) -> list[MetricEntry]:
    """The metric entries kept in a spool file (none when it does not exist; unreadable lines are skipped)."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entries.append(MetricEntry(**json.loads(line)))
        except (ValueError, TypeError):
            log.warning("skipping an unreadable line of %s: %r", path, line[:200])
    return entries


class TrackingWorker(threading.Thread):
    """Sends a run's tracking operations to MLflow; `submit` and `finish` are called by the training thread."""

    def __init__(self, target: TrackingTarget) -> None:
        super().__init__(name="mlflow-tracking", daemon=True)
        self.target = target
        self.run_id = target.resume_run_id or recorded_run_id(target.run_dir)
        self._ops: deque[tuple[str, Any]] = deque()
        self._cond = threading.Condition()
        self._client: Any = None
        self._opened = False
        self._continued = False
        self._high_water: dict[str, int] = {}
        self._calling_since: float | None = None
        self._failures = 0
        self._last_failure = 0.0
        self._finish_requested: float | None = None
        self._abandoned = False
        self._begin = threading.Event()
        spooled = read_spool(target.spool_path)
        if spooled:
            log.info("%d metric values kept in %s will be sent to MLflow", len(spooled), target.spool_path)
            self._ops.append(("metrics", spooled))

    # ------------------------------------------------------------------ the training thread's side
    def begin(self) -> None:
        """Let the thread import mlflow and send (it waits for this, so that it never competes with the
        start of training for the CPU; `finish` implies it)."""
        self._begin.set()

    def submit(self, kind: str, payload: Any) -> None:
        """Queue one operation; never blocks on the store."""
        with self._cond:
            if not self._abandoned:
                self._ops.append((kind, payload))
                self._cond.notify()

    def finish(self, status: str) -> None:
        """Queue the run's end and wait while the store answers (a KILLED run, which is being preempted, waits
        at most mlflow.timeout_s); then keep what is unsent in the spool file and leave the thread behind (it
        writes nothing more)."""
        self.submit("end", status)
        with self._cond:
            self._finish_requested = time.monotonic()
            self._cond.notify()
        self.begin()
        limit = self.target.timeout_s + STALL_SLACK_S if status == "KILLED" else None
        while self.is_alive():
            with self._cond:
                if self._stalled(limit):
                    self._abandoned = True
                    unsent = self._write_spool()
                    self._cond.notify()
                    log.warning("MLflow at %s did not take everything in time; run %s not marked %s, %d metric values "
                                "kept in %s for the next start of this run", self.target.tracking_uri, self.run_id,
                                status, unsent, self.target.spool_path)
                    return
            self.join(0.05)
        with self._cond:
            if self._ops:  # the thread stopped on an unexpected error
                self._write_spool()

    def _stalled(self, limit: float | None) -> bool:
        """The store failed since the end was asked for, a request runs past its timeout, or the wait passed
        `limit` seconds (caller holds the lock)."""
        assert self._finish_requested is not None
        now = time.monotonic()
        if limit is not None and now - self._finish_requested > limit:
            return True
        if self._failures and self._last_failure >= self._finish_requested:
            return True
        calling = self._calling_since
        return calling is not None and now - calling > self.target.timeout_s + STALL_SLACK_S

    # ------------------------------------------------------------------ the worker's side
    def run(self) -> None:
        """Send the queued operations in order until "end" is sent or the training thread gives up."""
        self._begin.wait()
        try:
            self._send_all()
        except Exception:  # a bug here must never reach the training
            log.exception("MLflow tracking stopped by an unexpected error; the metrics stay in training_history.json")

    def _send_all(self) -> None:
        while True:
            with self._cond:
                while not self._ops and not self._abandoned:
                    self._cond.wait()
                if self._abandoned:
                    return
                kind, payload = self._ops[0]
            try:
                self._open()
                self._send(kind, payload)
            except Exception as exc:  # the store's errors come in many types (requests, sqlalchemy, mlflow)
                if not self._wait_to_retry(exc):
                    return
                continue
            with self._cond:
                self._ops.popleft()
                self._sent()
            if kind == "end":
                return

    def _call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One request to the store, timed so that `finish` can tell a store that stopped answering."""
        self._calling_since = time.monotonic()
        try:
            return function(*args, **kwargs)
        finally:
            self._calling_since = None

    def _open(self) -> None:
        """Import mlflow, open the store and create or continue the run (once)."""
        if self._opened:
            return
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.target.tracking_uri)
        if self.run_id is not None:
            try:
                self._call(self._client.update_run, self.run_id, status="RUNNING")
                self._continued = True
                log.info("MLflow run %s at %s continued", self.run_id, self.target.tracking_uri)
            except Exception as exc:
                if getattr(exc, "error_code", None) != NOT_FOUND:
                    raise
                log.warning("MLflow run %s not found at %s; starting a new run", self.run_id, self.target.tracking_uri)
                self.run_id = None
        if self.run_id is None:
            experiment = self._call(self._client.get_experiment_by_name, self.target.experiment)
            experiment_id = experiment.experiment_id if experiment is not None else self._call(
                self._client.create_experiment, self.target.experiment, artifact_location=self.target.artifact_location)
            run = self._call(self._client.create_run, experiment_id, run_name=self.target.run_name,
                             tags=self.target.tags)
            self.run_id = run.info.run_id
            atomic_write_text(self.target.run_dir / MLFLOW_RUN_ID_NAME, self.run_id + "\n")
            log.info("MLflow run %s at %s (new)", self.run_id, self.target.tracking_uri)
        self._opened = True

    def _send(self, kind: str, payload: Any) -> None:
        if kind == "params":
            self._send_params(payload)
        elif kind == "metrics":
            self._send_metrics(payload)
        elif kind == "artifacts":
            for path in payload:
                if path.is_file():
                    self._call(self._client.log_artifact, self.run_id, str(path))
                elif path.is_dir():
                    self._call(self._client.log_artifacts, self.run_id, str(path), artifact_path=path.name)
        else:
            self._call(self._client.set_terminated, self.run_id, status=payload)

    def _send_params(self, values: dict[str, str]) -> None:
        from mlflow.entities import Param
        from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH

        existing = self._call(self._client.get_run, self.run_id).data.params
        params = [Param(key[:MAX_ENTITY_KEY_LENGTH], value[:MAX_PARAM_VAL_LENGTH])
                  for key, value in values.items() if key[:MAX_ENTITY_KEY_LENGTH] not in existing]
        for start in range(0, len(params), BATCH_SIZE):
            self._call(self._client.log_batch, self.run_id, params=params[start:start + BATCH_SIZE])

    def _last_step(self, key: str) -> int:
        """The highest step at which the run holds `key` (asked once per key of a continued run)."""
        if key not in self._high_water:
            history = self._call(self._client.get_metric_history, self.run_id, key) if self._continued else []
            self._high_water[key] = max((metric.step for metric in history), default=-1)
        return self._high_water[key]

    def _send_metrics(self, entries: list[MetricEntry]) -> None:
        from mlflow.entities import Metric

        new = [entry for entry in entries if entry.step > self._last_step(entry.key)]
        for start in range(0, len(new), BATCH_SIZE):
            batch = new[start:start + BATCH_SIZE]
            self._call(self._client.log_batch, self.run_id, metrics=[Metric(*entry) for entry in batch])
            for entry in batch:
                self._high_water[entry.key] = max(self._high_water[entry.key], entry.step)

    def _sent(self) -> None:
        """After an operation went through (caller holds the lock)."""
        if self._failures:
            log.info("MLflow at %s answers again; sending what waited", self.target.tracking_uri)
        self._failures = 0
        if not any(kind == "metrics" for kind, _ in self._ops):
            self.target.spool_path.unlink(missing_ok=True)

    def _wait_to_retry(self, exc: Exception) -> bool:
        """Keep the unsent metrics in the spool and wait before the next attempt; False when given up."""
        with self._cond:
            self._failures += 1
            self._last_failure = time.monotonic()
            if self._failures == 1:
                log.warning("MLflow at %s does not answer (%s: %s); training goes on, metrics wait in %s",
                            self.target.tracking_uri, type(exc).__name__, str(exc)[:300], self.target.spool_path)
            delay = min(MAX_RETRY_DELAY_S, 2 ** (self._failures - 1))
            deadline = time.monotonic() + delay
            while not self._abandoned and time.monotonic() < deadline:
                if self._finish_requested is not None and self._finish_requested > self._last_failure:
                    break  # the run ends: one more attempt now
                self._write_spool()
                self._cond.wait(deadline - time.monotonic())
            return not self._abandoned

    def _write_spool(self) -> int:
        """Write the queued metrics to the spool file (caller holds the lock); returns how many."""
        entries = [entry for kind, payload in self._ops if kind == "metrics" for entry in payload]
        if not entries:
            self.target.spool_path.unlink(missing_ok=True)
            return 0
        try:
            atomic_write_text(self.target.spool_path,
                              "".join(json.dumps(entry._asdict()) + "\n" for entry in entries))
        except OSError as exc:
            log.warning("cannot keep unsent MLflow metrics in %s (%s)", self.target.spool_path, exc)
        return len(entries)
