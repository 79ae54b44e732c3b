"""Run a trained regressor (and the classical baseline) over a data set: predictions, the conventional
reconstruction beside them, and the quoted resolutions (all events and inside the fiducial volume)."""
from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from lib.config.evaluation_schema import FiducialConfig
from lib.data.branches import MC_TRUTH_BRANCHES, is_real_data, reconstruction_branches
from lib.data.stream import RAW_INPUTS
from lib.evaluation.calibration import calibration_metrics
from lib.evaluation.classical import ClassicalBaseline
from lib.evaluation.fiducial import inside_fiducial
from lib.evaluation.resolution_estimators import ESTIMATORS
from lib.tasks import gather_arrays, resolution_metrics, valid_rows

log = logging.getLogger(__name__)

BASELINE_TRUTH = MC_TRUTH_BRANCHES
FIDUCIAL_POSITION = "uvwTruth"
"""The truth branch that decides whether an event lies inside the fiducial volume."""


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
    truth branches, and for real data, which has no MC truth at all), predictions and predicted
    sigma in physical units, the classical baseline's estimates when one is given and the batch
    columns named in `keep` as they are (e.g. the conventional reconstruction). `result`
    concatenates them (optionally across DDP ranks) and `metrics` computes the resolutions with
    `lib.tasks.resolution_metrics`, which keeps only events with valid truth and finite
    prediction: the one path behind both the per-epoch validation metrics and the final evaluation.
    """

    def __init__(self, tasks: Mapping[str, Any], baseline: ClassicalBaseline | None = None,
                 keep: tuple[str, ...] = ()):
        self.tasks, self.baseline, self.keep = tasks, baseline, keep
        self._parts: dict[str, list[np.ndarray]] = {}

    def _add(self, key: str, value: Any) -> None:
        self._parts.setdefault(key, []).append(np.asarray(value))

    @torch.no_grad()
    def add(self, head_outputs: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]) -> None:
        """Record one batch: the model's raw head outputs and the batch (on any device)."""
        heads = {name: head_outputs[name].float() for name in self.tasks}
        pred = {name: task.predict(heads[name]).cpu().numpy() for name, task in self.tasks.items()}
        sigma = {name: task.predict_sigma(heads[name]).cpu().numpy() for name, task in self.tasks.items()
                 if task.predicts_sigma}
        self.add_predictions(pred, sigma, batch)

    @torch.no_grad()
    def add_predictions(self, pred: Mapping[str, np.ndarray], sigma: Mapping[str, np.ndarray],
                        batch: Mapping[str, torch.Tensor]) -> None:
        """Record one batch of predictions already in physical units: {task: (B, n_outputs)} for every
        task, and the predicted sigma of the tasks that have one."""
        for key in ("run", "event"):
            if key in batch:
                self._add(key, batch[key].cpu().numpy())
        for key in self.keep:
            if key in batch:
                self._add(f"kept/{key}", batch[key].cpu().numpy())
        real_data = is_real_data(batch)
        for name, task in self.tasks.items():
            n = len(pred[name])
            has_truth = not real_data and all(key in batch for key in task.truth_keys)
            truth = task.target(batch).double().cpu().numpy() if has_truth else np.full((n, task.n_outputs), np.nan)
            self._add(f"truth/{name}", truth)
            self._add(f"pred/{name}", pred[name])
            if name in sigma:
                self._add(f"sigma/{name}", sigma[name])
        if self.baseline is not None:
            cpu_batch = {k: v.cpu() for k, v in batch.items()}
            for name, value in self.baseline.predict(*raw_inputs(cpu_batch)).items():
                self._add(f"baseline/{name}", value)

    def result(self, across_ranks: bool = False) -> dict[str, Any]:
        """{"run", "event", "truth": {task: (N, k)}, "pred": {...}, "sigma": {...}, "baseline": {...},
        "kept": {column: (N, ...)}}; with `across_ranks` every rank gets the rows of all ranks in rank
        order (a collective: the keys every rank gathers do not depend on what it saw; do not `keep`
        columns then)."""
        empty: dict[str, tuple[int, ...]] = {"run": (0,), "event": (0,)}
        for name, task in self.tasks.items():
            groups = ("truth", "pred", "sigma") if task.predicts_sigma else ("truth", "pred")
            empty.update({f"{group}/{name}": (0, task.n_outputs) for group in groups})
        result: dict[str, Any] = {"truth": {}, "pred": {}, "sigma": {}, "baseline": {}, "kept": {}}
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
        """Resolution metrics of `result[source]` ("pred" or "baseline") against its truth, with the
        calibration of the predicted sigma (lib.evaluation.calibration) for "pred"."""
        metrics = resolution_metrics(self.tasks, result["truth"], result[source])
        if source == "pred":
            metrics.update(calibration_metrics(self.tasks, result["truth"], result["pred"], result["sigma"]))
        return metrics


@torch.no_grad()
def collect_predictions(model: nn.Module, loader: Any, device: torch.device,
                        baseline: ClassicalBaseline | None = None) -> dict[str, Any]:
    """Predictions (physical units) of every task of `model` over `loader` on this process (with the
    RAW_INPUTS columns when a `baseline` is given; see PredictionCollector.result for the layout),
    keeping the loader's reconstruction branches (lib.data.branches) and the fiducial position."""
    model.eval()
    keep = (*reconstruction_branches(loader.truth_branches), FIDUCIAL_POSITION)
    collector = PredictionCollector(model.tasks, baseline, keep=keep)
    loader.set_epoch(0)
    for batch in loader:
        collector.add(model.head_outputs(batch["x"].to(device)), batch)
    return collector.result()


def fiducial_mask(result: Mapping[str, Any], cfg: FiducialConfig) -> np.ndarray | None:
    """(N,) bool: events of `result` whose uvwTruth lies inside the volume; None without uvwTruth."""
    uvw = result["kept"].get(FIDUCIAL_POSITION)
    return None if uvw is None else inside_fiducial(np.asarray(uvw, np.float64), cfg)


def _rows(values: Mapping[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    return {name: array[mask] for name, array in values.items()}


def quoted_metrics(tasks: Mapping[str, Any], result: Mapping[str, Any], cfg: FiducialConfig,
                   estimator: str = "w68") -> dict[str, Any]:
    """What metrics.json quotes: the resolutions of the regressor and the baseline over all events
    ("regressor", "baseline") and over the events inside the fiducial volume ("regressor_fiducial",
    "baseline_fiducial"; left out without uvwTruth), and the event counts ("events"). A width `estimator`
    other than w68 adds `<output>_<estimator>`; tasks that predict sigma add their calibration to the
    regressor's sections (lib.evaluation.calibration)."""
    truth, n = result["truth"], len(result["run"])
    inside = fiducial_mask(result, cfg)
    metrics: dict[str, Any] = {"events": {"all": n, "fiducial": None if inside is None else int(inside.sum())}}
    if inside is None:
        log.warning("no %s in the evaluated files: resolutions are quoted for all events only", FIDUCIAL_POSITION)
    selections = {"": np.ones(n, bool)} if inside is None else {"": np.ones(n, bool), "_fiducial": inside}
    for suffix, rows in selections.items():
        selected_truth = _rows(truth, rows)
        for source, section in (("pred", "regressor"), ("baseline", "baseline")):
            selected = _rows(result[source], rows)
            metrics[section + suffix] = {**resolution_metrics(tasks, selected_truth, selected),
                                         **estimated_widths(tasks, selected_truth, selected, estimator)}
        metrics["regressor" + suffix].update(calibration_metrics(tasks, selected_truth, _rows(result["pred"], rows),
                                                                 _rows(result["sigma"], rows)))
    return metrics


def estimated_widths(tasks: Mapping[str, Any], truth: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                     estimator: str) -> dict[str, float]:
    """`<output>_<estimator>`: the width of each output's residual by `estimator` (nothing for w68, which
    resolution_metrics quotes already)."""
    if estimator == "w68":
        return {}
    widths: dict[str, float] = {}
    for name, task in tasks.items():
        if name not in pred:
            continue
        keep = valid_rows(truth[name]) & np.isfinite(pred[name]).all(1)
        residuals = task.residuals(np.asarray(pred[name][keep], np.float64), np.asarray(truth[name][keep], np.float64))
        widths.update({f"{output}_{estimator}": ESTIMATORS[estimator](residuals[:, i])
                       for i, output in enumerate(task.output_names)})
    return widths
