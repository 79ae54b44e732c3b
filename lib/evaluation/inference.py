"""Run a trained regressor (and the classical baseline) over a data set: predictions and metrics."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lib.data.stream import RAW_INPUTS
from lib.evaluation.classical import ClassicalBaseline
from lib.engine import load_checkpoint

log = logging.getLogger(__name__)

BASELINE_TRUTH = ("energyTruth", "uvwTruth", "timeTruth")


def checkpoint_weights(path: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(resolved config, weights to evaluate: EMA when the run kept one) of an xecmae checkpoint."""
    checkpoint = load_checkpoint(path)
    weights = checkpoint["ema"]["module"] if checkpoint.get("ema") else checkpoint["model"]
    return checkpoint["config"], weights


def raw_inputs(batch: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, ...]:
    """Raw npho and time (N, 4760) float64 as read from the files, plus the validity masks, of a
    batch of a loader built with the RAW_INPUTS extra columns."""
    missing = [name for name in RAW_INPUTS if name not in batch]
    if missing:
        raise ValueError(f"the classical baseline needs the batch columns {missing}: build its loader with "
                         f"extras=lib.data.stream.RAW_INPUTS (lib.data.build.build_loader)")
    npho, time = (batch[name].double().numpy() for name in RAW_INPUTS)
    return npho, time, batch["npho_valid"].numpy(), batch["time_valid"].numpy()


def fit_baseline(loader: Any, max_events: int, cfg: Any = None) -> ClassicalBaseline | None:
    """Calibrate the classical baseline on up to `max_events` events of `loader` (with the RAW_INPUTS
    columns; None without truth)."""
    parts: dict[str, list[np.ndarray]] = {}
    seen = 0
    loader.set_epoch(0)
    for batch in loader:
        if seen >= max_events:
            break
        truth = {k: batch[k].numpy() for k in BASELINE_TRUTH if k in batch}
        if not truth:
            return None
        for key, value in zip(("npho", "time", "npho_valid", "time_valid"), raw_inputs(batch)):
            parts.setdefault(key, []).append(value)
        for key, value in truth.items():
            parts.setdefault(key, []).append(value)
        seen += len(batch["x"])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    truth = {k: arrays.pop(k) for k in BASELINE_TRUTH if k in arrays}
    log.info("calibrating the classical baseline on %d training events", seen)
    return ClassicalBaseline(cfg).fit(arrays["npho"], arrays["time"], arrays["npho_valid"], arrays["time_valid"], truth)


@torch.no_grad()
def collect_predictions(model: nn.Module, loader: Any, device: torch.device,
                        baseline: ClassicalBaseline | None = None) -> dict[str, Any]:
    """Predictions (physical units) of every selected task over `loader` (with the RAW_INPUTS
    columns when a `baseline` is given).

    Returns {"run", "event", "truth": {task: (N, k)}, "pred": {task: (N, k)}, "sigma": {...},
    "baseline": {task: (N, k)}}; rows with non-finite truth keep NaN truth (filtered by `task_metrics`).
    """
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}

    def add(key: str, value: Any) -> None:
        parts.setdefault(key, []).append(np.asarray(value))

    loader.set_epoch(0)
    for batch in loader:
        outputs = model.head_outputs(batch["x"].to(device))
        add("run", batch["run"].numpy())
        add("event", batch["event"].numpy())
        for name, task in model.tasks.items():
            head = outputs[name].float()
            has_truth = all(key in batch for key in task.truth_keys)
            truth = task.target(batch).double().numpy() if has_truth else np.full((len(head), task.n_outputs), np.nan)
            add(f"truth/{name}", truth)
            add(f"pred/{name}", task.predict(head).cpu().numpy())
            if task.cfg.loss == "gaussian_nll":
                add(f"sigma/{name}", task.predict_sigma(head).cpu().numpy())
        if baseline is not None:
            for name, value in baseline.predict(*raw_inputs(batch)).items():
                add(f"baseline/{name}", value)
    result: dict[str, Any] = {"truth": {}, "pred": {}, "sigma": {}, "baseline": {}}
    for key, values in parts.items():
        group, _, name = key.partition("/")
        if name:
            result[group][name] = np.concatenate(values)
        else:
            result[group] = np.concatenate(values)
    return result


def task_metrics(tasks: Mapping[str, Any], truth: Mapping[str, np.ndarray],
                 pred: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Per-task resolution metrics on the events whose truth and prediction are finite."""
    metrics: dict[str, float] = {}
    for name, task in tasks.items():
        if name not in pred:
            continue
        keep = np.isfinite(truth[name]).all(1) & np.isfinite(pred[name]).all(1)
        if keep.sum() >= 2:
            metrics.update(task.metrics(pred[name][keep], truth[name][keep]))
    return metrics


def by_output(tasks: Mapping[str, Any], per_task: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{task: (N, k)} -> {output name: (N,)} (e.g. position -> u, v, w)."""
    return {output: per_task[name][:, i] for name, task in tasks.items() if name in per_task
            for i, output in enumerate(task.output_names)}
