"""Run a trained regressor (and the classical baseline) over a data set: predictions and metrics."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lib.data.stream import RAW_INPUTS
from lib.evaluation.classical import ClassicalBaseline
from lib.tasks import gather_arrays, resolution_metrics

log = logging.getLogger(__name__)

BASELINE_TRUTH = ("energyTruth", "uvwTruth", "timeTruth")


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


class PredictionCollector:
    """Per-event predictions of every task of a regressor, gathered batch by batch.

    `add` keeps, for each batch, run / event, truth (NaN rows where the batch lacks a task's
    truth branches), predictions and predicted sigma in physical units, and the classical
    baseline's estimates when one is given. `result` concatenates them (optionally across
    DDP ranks) and `metrics` computes the resolutions with `lib.tasks.resolution_metrics`,
    which keeps only events with finite truth and prediction: the one path behind both the
    per-epoch validation metrics and the final evaluation.
    """

    def __init__(self, tasks: Mapping[str, Any], baseline: ClassicalBaseline | None = None):
        self.tasks, self.baseline = tasks, baseline
        self._parts: dict[str, list[np.ndarray]] = {}

    def _add(self, key: str, value: Any) -> None:
        self._parts.setdefault(key, []).append(np.asarray(value))

    @torch.no_grad()
    def add(self, head_outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        """Record one batch: the model's raw head outputs and the batch (on any device)."""
        for key in ("run", "event"):
            if key in batch:
                self._add(key, batch[key].cpu().numpy())
        for name, task in self.tasks.items():
            head = head_outputs[name].float()
            has_truth = all(key in batch for key in task.truth_keys)
            truth = task.target(batch).double().cpu().numpy() if has_truth else np.full((len(head), task.n_outputs),
                                                                                         np.nan)
            self._add(f"truth/{name}", truth)
            self._add(f"pred/{name}", task.predict(head).cpu().numpy())
            if task.cfg.loss == "gaussian_nll":
                self._add(f"sigma/{name}", task.predict_sigma(head).cpu().numpy())
        if self.baseline is not None:
            cpu_batch = {k: v.cpu() for k, v in batch.items()}
            for name, value in self.baseline.predict(*raw_inputs(cpu_batch)).items():
                self._add(f"baseline/{name}", value)

    def result(self, across_ranks: bool = False) -> dict[str, Any]:
        """{"run", "event", "truth": {task: (N, k)}, "pred": {...}, "sigma": {...}, "baseline": {...}};
        with `across_ranks` every rank gets the rows of all ranks in rank order (a collective: the
        keys every rank gathers do not depend on what it saw)."""
        empty: dict[str, tuple[int, ...]] = {"run": (0,), "event": (0,)}
        for name, task in self.tasks.items():
            groups = ("truth", "pred", "sigma") if task.cfg.loss == "gaussian_nll" else ("truth", "pred")
            empty.update({f"{group}/{name}": (0, task.n_outputs) for group in groups})
        result: dict[str, Any] = {"truth": {}, "pred": {}, "sigma": {}, "baseline": {}}
        for key in dict.fromkeys([*empty, *self._parts]):
            parts = self._parts.get(key)
            local = np.concatenate(parts) if parts else np.zeros(empty[key])
            group, _, name = key.partition("/")
            value = gather_arrays(local) if across_ranks else local
            if name:
                result[group][name] = value
            else:
                result[group] = value
        self._parts = {}
        return result

    def metrics(self, result: Mapping[str, Any], source: str = "pred") -> dict[str, float]:
        """Resolution metrics of `result[source]` ("pred" or "baseline") against its truth."""
        return resolution_metrics(self.tasks, result["truth"], result[source])


@torch.no_grad()
def collect_predictions(model: nn.Module, loader: Any, device: torch.device,
                        baseline: ClassicalBaseline | None = None) -> dict[str, Any]:
    """Predictions (physical units) of every task of `model` over `loader` on this process (with the
    RAW_INPUTS columns when a `baseline` is given; see PredictionCollector.result for the layout)."""
    model.eval()
    collector = PredictionCollector(model.tasks, baseline)
    loader.set_epoch(0)
    for batch in loader:
        collector.add(model.head_outputs(batch["x"].to(device)), batch)
    return collector.result()
