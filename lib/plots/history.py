"""Learning curves: per-epoch history records from training_history.json or an MLflow run, and their plots."""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from lib.plots.style import figure

log = logging.getLogger(__name__)

_SPLITS = ("train", "val")


def load_history(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records of a training_history.json (a JSON list of dicts)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"history file {path} does not exist; pass the run's training_history.json")
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"history file {path} is not valid JSON ({err})") from err
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ValueError(f"history file {path} must hold a JSON list of per-epoch records (dicts)")
    return records


def history_from_mlflow(run_id: str, tracking_uri: str | None = None, client: Any = None) -> list[dict[str, Any]]:
    """Per-step records {metric: value} of an MLflow run (one per logged step, in step order);
    "epoch" comes from the run's logged epoch metric, else the step is used."""
    if client is None:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=tracking_uri)
    try:
        keys = sorted(client.get_run(run_id).data.metrics)
    except Exception as err:  # MlflowException, connection errors
        raise ValueError(f"MLflow run {run_id} not readable at {tracking_uri or 'the given client'} ({err})") from err
    by_step: dict[int, dict[str, Any]] = {}
    for key in keys:
        for metric in client.get_metric_history(run_id, key):
            by_step.setdefault(metric.step, {})[key] = metric.value
    if not by_step:
        raise ValueError(f"MLflow run {run_id} has no logged metrics")
    if "epoch" not in keys:
        log.warning("MLflow run %s logged no 'epoch' metric; using the step as epoch", run_id)
    return [{"epoch": record.get("epoch", step), **record} for step, record in sorted(by_step.items())]


def _metric_names(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Metric names (without the train/ or val/ prefix) found in any record, in first-seen order."""
    names: dict[str, None] = {}
    for record in history:
        for key in record:
            split, _, name = key.partition("/")
            if split in _SPLITS and name:
                names[name] = None
    return list(names)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> list[tuple[Any, Any]]:
    """(epoch, value) of every record holding `key` (records without "epoch" count from 1)."""
    return [(record.get("epoch", i + 1), record[key]) for i, record in enumerate(history) if key in record]


def plot_learning_curves(history: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike,
                         metrics: Sequence[str] | None = None) -> list[Path]:
    """curve_<metric>.png per metric found under train/ or val/ (both curves where both exist; only
    `metrics` when given), log-y for positive losses; lr.png when the records hold "lr"."""
    saved: list[Path] = []
    out_dir = Path(out_dir)
    for name in _metric_names(history):
        if metrics is not None and name not in metrics:
            continue
        curves = {split: _series(history, f"{split}/{name}") for split in _SPLITS}
        values = [value for points in curves.values() for _, value in points]
        with figure(out_dir / f"curve_{name.replace('/', '_')}.png", saved) as (fig, ax):
            for split, points in curves.items():
                if points:
                    ax.plot(*zip(*points), marker="o", markersize=3, label=split)
            if "loss" in name and min(values) > 0:
                ax.set_yscale("log")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(name)
            ax.legend()
    lr_points = _series(history, "lr")
    if lr_points:
        with figure(out_dir / "lr.png", saved) as (fig, ax):
            ax.plot(*zip(*lr_points), marker="o", markersize=3)
            ax.set_xlabel("epoch")
            ax.set_ylabel("learning rate")
            if min(value for _, value in lr_points) > 0:
                ax.set_yscale("log")
    return saved
