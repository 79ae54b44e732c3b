"""The model `lib.predict` runs: raw sensor arrays in, named outputs in physical units out.

    outputs = model(npho, relative_time)   # (N, 4760) float32 as read -> {"E": (N,), "u": ..., "sigma_E": ...}

Two implementations of that one call:
- `CheckpointModel`: a trained `Regressor` with its run's normalization (lib.normalization.normalize,
  as the loader applies it), its heads and each task's destandardization (`predict`, `predict_sigma`);
- `ExportedFileModel`: a file written by lib.export (ONNX run by onnxruntime on the raw arrays, the
  path the experiment's C++ analyzer takes, or TorchScript), read by lib.evaluation.exported_model
  (normalization, validity rules and units inside the graph).

Both say which regression tasks they predict (`tasks`: lib.tasks targets, for the truth columns and
the resolutions) and describe themselves for the prediction files' metadata (`description`).

An exported file names its outputs after the tasks' output names (E, t, u, v, w, theta, phi;
sigma_<output> where a task predicts an uncertainty); the regression tasks are read from them.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.config import TASK_SPECS, NormalizationConfig, TaskConfig
from lib.evaluation.exported_model import ExportError, load_exported_model
from lib.normalization import describe, normalize
from lib.tasks import build_tasks

SIGMA_PREFIX = "sigma_"


class PredictionModelError(ValueError):
    """A model file cannot be used for predictions; the message says what to change."""


class PredictionModel:
    """Raw npho / relative_time (N, 4760) -> {output name: (N,)} in physical units."""

    tasks: dict[str, Any]
    """The regression targets predicted, by task name (lib.tasks)."""
    description: dict[str, Any]
    """What the prediction files' metadata says about the model: format, path, normalization."""

    def __call__(self, npho: np.ndarray, relative_time: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def by_task(self, outputs: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """({task: (N, k)} predictions, {task: (N, k)} sigma of the tasks that predict one) of `outputs`."""
        pred, sigma = {}, {}
        for name, task in self.tasks.items():
            pred[name] = np.stack([outputs[o] for o in task.output_names], axis=1)
            if all(SIGMA_PREFIX + o in outputs for o in task.output_names):
                sigma[name] = np.stack([outputs[SIGMA_PREFIX + o] for o in task.output_names], axis=1)
        return pred, sigma


class CheckpointModel(PredictionModel):
    """A trained regressor (weights loaded) with the normalization of its run, on `device`."""

    def __init__(self, regressor: nn.Module, norm: NormalizationConfig, device: str | torch.device, path: Path):
        self.regressor = regressor.to(device).eval()
        self.norm, self.device = norm, torch.device(device)
        self.tasks = dict(regressor.tasks.items())
        self.description = {"format": "checkpoint", "path": str(path), "normalization": describe(norm)}

    @torch.no_grad()
    def __call__(self, npho: np.ndarray, relative_time: np.ndarray) -> dict[str, np.ndarray]:
        x, _, _ = normalize(np.asarray(npho, np.float32), np.asarray(relative_time, np.float32), self.norm)
        heads = self.regressor.head_outputs(torch.from_numpy(x).to(self.device))
        outputs: dict[str, np.ndarray] = {}
        for name, task in self.tasks.items():
            head = heads[name].float()
            outputs.update(zip(task.output_names, task.predict(head).cpu().numpy().T))
            if task.cfg.loss == "gaussian_nll":
                sigma = task.predict_sigma(head).cpu().numpy().T
                outputs.update(zip((SIGMA_PREFIX + o for o in task.output_names), sigma))
        return outputs


def tasks_of_outputs(outputs: list[str], path: Path) -> dict[str, Any]:
    """The regression targets whose outputs are all among `outputs` (gaussian_nll where every
    sigma_<output> is there too), in TASK_SPECS order; PredictionModelError for an output no task has."""
    tasks: dict[str, TaskConfig] = {}
    for name, spec in TASK_SPECS.items():
        if all(o in outputs for o in spec.output_names):
            with_sigma = all(SIGMA_PREFIX + o in outputs for o in spec.output_names)
            tasks[name] = TaskConfig(loss="gaussian_nll" if with_sigma else "smooth_l1")
    covered = {o for name in tasks for o in TASK_SPECS[name].output_names}
    unknown = [o for o in outputs if o.removeprefix(SIGMA_PREFIX) not in covered]
    if unknown or not tasks:
        known = {name: spec.output_names for name, spec in TASK_SPECS.items()}
        raise PredictionModelError(f"{path}: outputs {unknown or outputs} are not regression outputs (tasks and their "
                                   f"outputs: {known}); lib.predict runs exported regressors (lib.export --part "
                                   "regressor)")
    return build_tasks(tasks)


class ExportedFileModel(PredictionModel):
    """A file written by lib.export (ONNX, run by onnxruntime on the CPU, or TorchScript), loaded and run
    by lib.evaluation.exported_model: the one reader of exported files."""

    def __init__(self, path: Path):
        try:
            self.exported = load_exported_model(path)
        except ExportError as err:
            raise PredictionModelError(str(err)) from err
        self.tasks = tasks_of_outputs(self.exported.output_names, path)
        self.description = {"format": self.exported.format, "path": str(path),
                            "normalization": self.exported.metadata.get("normalization")}

    def __call__(self, npho: np.ndarray, relative_time: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return self.exported(npho, relative_time)
        except ExportError as err:
            raise PredictionModelError(str(err)) from err
