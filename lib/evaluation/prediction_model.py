"""The model `lib.predict` runs: raw sensor arrays in, named outputs in physical units out.

    outputs = model(npho, relative_time)   # (N, 4760) float32 as read -> {"E": (N,), "u": ..., "sigma_E": ...}

Two implementations of that one call:
- `CheckpointModel`: a trained `Regressor` with its run's normalization (lib.normalization.normalize,
  as the loader applies it), its heads and each task's destandardization (`predict`, `predict_sigma`);
- `OnnxModel`: an exported ONNX file run by onnxruntime on the raw arrays, the path the experiment's
  C++ analyzer takes (normalization, validity rules and units inside the graph).

Both say which regression tasks they predict (`tasks`: lib.tasks targets, for the truth columns and
the resolutions) and describe themselves for the prediction files' metadata (`description`).

What an ONNX file must hold (what lib.export writes): inputs `npho` and `relative_time`, float32
[batch, 4760]; one output per predicted quantity named by its output name (E, t, u, v, w, theta,
phi; sigma_<output> where the task predicts an uncertainty), each [batch]; the metadata property
"outputs": a JSON list of {"name": ...} naming those outputs, and optionally "normalization" (JSON),
copied into the prediction files.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lib.config import TASK_SPECS, NormalizationConfig, TaskConfig
from lib.normalization import describe, normalize
from lib.tasks import build_tasks

ONNX_INPUTS = ("npho", "relative_time")
"""Input names of an exported ONNX model, in call order."""
ONNX_EXTRA_HINT = "pip install -e .[export]"
"""How to install onnxruntime (the `export` extra)."""
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


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as err:
        raise PredictionModelError(f"--format onnx needs onnxruntime, which is not installed ({err}); install the "
                                   f"export extra: {ONNX_EXTRA_HINT}") from err
    return onnxruntime


class OnnxModel(PredictionModel):
    """An exported ONNX regressor run by onnxruntime on the CPU (see the module docstring for the file's layout)."""

    def __init__(self, path: Path):
        ort = _import_onnxruntime()
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as err:  # onnxruntime raises its own types for missing, damaged or foreign files
            raise PredictionModelError(f"{path}: not a readable ONNX model ({type(err).__name__}: {err}); give "
                                       "a file written by python -m lib.export --format onnx") from err
        metadata = self.session.get_modelmeta().custom_metadata_map
        names = self._output_names(path, metadata)
        inputs = [i.name for i in self.session.get_inputs()]
        if sorted(inputs) != sorted(ONNX_INPUTS):
            raise PredictionModelError(f"{path}: inputs {inputs}, expected {list(ONNX_INPUTS)} (raw sensor arrays)")
        self.output_names = names
        self.tasks = tasks_of_outputs(names, path)
        normalization = json.loads(metadata["normalization"]) if "normalization" in metadata else None
        self.description = {"format": "onnx", "path": str(path), "normalization": normalization}

    def _output_names(self, path: Path, metadata: Mapping[str, str]) -> list[str]:
        """The names of metadata["outputs"], checked against the graph's outputs."""
        if "outputs" not in metadata:
            raise PredictionModelError(f"{path}: no 'outputs' in its metadata (found {sorted(metadata)}); export "
                                       "the model with python -m lib.export")
        names = [entry["name"] for entry in json.loads(metadata["outputs"])]
        graph = [o.name for o in self.session.get_outputs()]
        if sorted(names) != sorted(graph):
            raise PredictionModelError(f"{path}: metadata names outputs {names} but the graph has {graph}")
        return names

    def __call__(self, npho: np.ndarray, relative_time: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(array, dtype=np.float32)
                 for name, array in zip(ONNX_INPUTS, (npho, relative_time))}
        return dict(zip(self.output_names, self.session.run(self.output_names, feeds)))
