"""The runs a summary compares, read from run directories or from an MLflow experiment, in one form.

A `RunRecord` holds the flattened config (values as text, as MLflow stores params), the per-epoch
history (records with global_step, epoch and train/ val/ metrics) and the final value of every metric.
From a run directory: config.yaml, training_history.json and metrics.json (whose sections get the names
the finished fine-tune logs to MLflow: final/, baseline/, final_fiducial/, baseline_fiducial/). From
MLflow: the run's params, the latest value of each metric, and the history of the metrics asked for.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jobs.plans import SWEEP_TAG
from lib.config import ConfigError, flatten_config
from lib.io.run_files import CONFIG_NAME, DONE_NAME, HISTORY_NAME

METRICS_NAME = "metrics.json"
"""The final evaluation of a finished fine-tune (written by lib.recipes.finetune)."""
METRICS_SECTIONS = {"regressor": "final", "baseline": "baseline", "regressor_fiducial": "final_fiducial",
                    "baseline_fiducial": "baseline_fiducial"}
"""metrics.json section -> prefix of its values in MLflow (as lib.recipes.finetune.finish logs them)."""


@dataclass
class RunRecord:
    """One run as a summary sees it."""

    name: str
    source: str
    """Run directory or MLflow run id."""
    status: str
    config: dict[str, str]
    history: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _run_dirs(paths: Iterable[Path]) -> list[Path]:
    """Each path that is a run directory (holds config.yaml), else the run directories directly inside it."""
    found = []
    for path in paths:
        if (path / CONFIG_NAME).is_file():
            found.append(path)
        elif path.is_dir():
            found += sorted(child for child in path.iterdir() if (child / CONFIG_NAME).is_file())
        else:
            raise ConfigError(f"{path}: not a folder; pass run directories or folders that hold them")
    return found


def record_from_run_dir(run_dir: Path) -> RunRecord:
    """The RunRecord of one run directory."""
    config = yaml.safe_load((run_dir / CONFIG_NAME).read_text(encoding="utf-8")) or {}
    history_path, metrics_path = run_dir / HISTORY_NAME, run_dir / METRICS_NAME
    history = json.loads(history_path.read_text(encoding="utf-8")) if history_path.is_file() else []
    final = {key: value for record in history for key, value in record.items() if isinstance(value, (int, float))}
    if metrics_path.is_file():
        sections = json.loads(metrics_path.read_text(encoding="utf-8"))
        for section, prefix in METRICS_SECTIONS.items():
            final.update({f"{prefix}/{key}": value for key, value in sections.get(section, {}).items()})
    status = "finished" if (run_dir / DONE_NAME).exists() else "not finished"
    flat = {key: _text(value) for key, value in flatten_config(config).items()}
    return RunRecord(run_dir.name, str(run_dir), status, flat, history, final)


def records_from_run_dirs(paths: Sequence[Path], sweep: str | None) -> list[RunRecord]:
    """The runs in `paths` (run directories or folders of them), only those of `sweep` when given."""
    records = [record_from_run_dir(path) for path in _run_dirs(paths)]
    if sweep is not None:
        records = [record for record in records if record.config.get(f"mlflow.tags.{SWEEP_TAG}") == sweep]
    if not records:
        where = ", ".join(map(str, paths))
        raise ConfigError(f"no run directories{f' of sweep {sweep!r}' if sweep else ''} in {where}")
    return records


def _history_from_mlflow(client: Any, run_id: str, keys: Sequence[str]) -> list[dict[str, Any]]:
    """Records {global_step, <key>: value} per logged step of `keys` (the trainer logs at the global step)."""
    by_step: dict[int, dict[str, Any]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            by_step.setdefault(metric.step, {"global_step": metric.step})[key] = metric.value
    return [record for _, record in sorted(by_step.items())]


def records_from_mlflow(experiment: str, tracking_uri: str, sweep: str | None,
                        history_keys: Sequence[str]) -> list[RunRecord]:
    """The runs of an MLflow experiment (of `sweep` only, by its tag, when given) with the history of
    `history_keys`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = [item.name for item in client.search_experiments()]
        raise ConfigError(f"no MLflow experiment {experiment!r} at {tracking_uri}; it has: {', '.join(names) or 'none'}")
    query = f"tags.{SWEEP_TAG} = '{sweep}'" if sweep else ""
    runs = client.search_runs([found.experiment_id], filter_string=query, max_results=10000)
    if not runs:
        raise ConfigError(f"no runs{f' tagged {SWEEP_TAG}={sweep}' if sweep else ''} in MLflow experiment "
                          f"{experiment!r} at {tracking_uri}")
    records = []
    for run in runs:
        name = run.info.run_name or run.info.run_id
        history = _history_from_mlflow(client, run.info.run_id, [*history_keys, "epoch"])
        records.append(RunRecord(name, run.info.run_id, run.info.status.lower(), dict(run.data.params), history,
                                 dict(run.data.metrics)))
    return sorted(records, key=lambda record: record.name)
