"""Run an exported model (ONNX or TorchScript, written by `python -m lib.export`) on raw sensor arrays.

    model = load_exported_model("artifacts/<run>/exported/regressor_best.onnx")
    outputs = model(npho, relative_time)      # {"E": (N,), "u": (N,), ..., "sigma_E": (N,)} float32

The inputs are what the experiment's files hold: raw npho and relative_time (N, 4760), fill values
(1e10, NaN) allowed for dead channels; the exported graph normalizes them itself. This module
imports neither torch nor lib's torch code: an ONNX model runs with numpy and onnxruntime alone
(the same path a C++ analyzer takes); a TorchScript model needs torch, imported on first use.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

EXPORT_EXTRA_HINT = "pip install -e .[export]"
"""How to install what ONNX export and inference need (the `export` extra of pyproject.toml)."""
TORCHSCRIPT_METADATA_FILE = "xecmae_export.json"
"""Name of the TorchScript extra file that holds the export metadata (all of it, as JSON)."""
INPUT_NAMES = ("npho", "relative_time")
"""Names of the exported graph's inputs, in argument order."""
DEFAULT_BATCH_SIZE = 256
EXPORT_KIND = "xecmae-export"
"""Value of metadata["kind"] in every file lib.export writes."""


class ExportError(RuntimeError):
    """An export cannot be written, read or run as asked; the message says what to change."""


def import_onnxruntime() -> Any:
    """The onnxruntime module, or ExportError naming the extra to install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise ExportError(f"onnxruntime is not installed ({exc}); install the export extra: "
                          f"{EXPORT_EXTRA_HINT}") from exc
    return onnxruntime


@dataclass
class ExportedModel:
    """A loaded export: call it on raw (N, 4760) npho and relative_time; `metadata` is what lib.export stored."""

    path: Path
    format: str
    metadata: dict[str, Any]
    output_names: list[str]
    _run_batch: Callable[[np.ndarray, np.ndarray], list[np.ndarray]]

    def __call__(self, npho: Any, relative_time: Any, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, np.ndarray]:
        """Outputs by name for raw inputs (N, n_sensors), run in batches of `batch_size` events."""
        npho, relative_time = self._check_inputs(npho, relative_time)
        parts: list[list[np.ndarray]] = [[] for _ in self.output_names]
        for start in range(0, len(npho), batch_size):
            stop = start + batch_size
            for part, value in zip(parts, self._run_batch(npho[start:stop], relative_time[start:stop])):
                part.append(value)
        return {name: np.concatenate(part) for name, part in zip(self.output_names, parts)}

    def _check_inputs(self, npho: Any, relative_time: Any) -> tuple[np.ndarray, np.ndarray]:
        n_sensors = self.metadata["inputs"][0]["shape"][1]
        arrays = []
        for name, array in zip(INPUT_NAMES, (npho, relative_time)):
            array = np.ascontiguousarray(array, dtype=np.float32)
            if array.ndim != 2 or array.shape[1] != n_sensors:
                raise ExportError(f"{self.path}: input {name} must have shape (events, {n_sensors}), "
                                  f"got {array.shape}; pass one row of {n_sensors} sensor values per event")
            arrays.append(array)
        if arrays[0].shape != arrays[1].shape:
            raise ExportError(f"{self.path}: npho {arrays[0].shape} and relative_time {arrays[1].shape} "
                              "must have the same shape")
        return arrays[0], arrays[1]


def _load_onnx(path: Path, threads: int | None) -> ExportedModel:
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    custom = session.get_modelmeta().custom_metadata_map
    metadata = {key: json.loads(value) for key, value in custom.items()}
    names = [output.name for output in session.get_outputs()]

    def run_batch(npho: np.ndarray, relative_time: np.ndarray) -> list[np.ndarray]:
        return session.run(names, dict(zip(INPUT_NAMES, (npho, relative_time))))

    return ExportedModel(path, "onnx", metadata, names, run_batch)


def _load_torchscript(path: Path, threads: int | None) -> ExportedModel:
    import warnings

    import torch

    if threads:
        torch.set_num_threads(threads)
    extra = {TORCHSCRIPT_METADATA_FILE: ""}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.load.* is deprecated", category=DeprecationWarning)
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    metadata = json.loads(extra[TORCHSCRIPT_METADATA_FILE] or "{}")
    names = [output["name"] for output in metadata.get("outputs", [])]

    def run_batch(npho: np.ndarray, relative_time: np.ndarray) -> list[np.ndarray]:
        with torch.inference_mode():
            outputs = module(torch.from_numpy(npho), torch.from_numpy(relative_time))
        return [value.numpy() for value in outputs]

    return ExportedModel(path, "torchscript", metadata, names, run_batch)


def load_exported_model(path: str | Path, threads: int | None = None) -> ExportedModel:
    """Load an ONNX (onnxruntime, CPU) or TorchScript export of lib.export; `threads`: intra-op threads."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"exported model {path} does not exist; write one with python -m lib.export")
    loader = _load_torchscript if zipfile.is_zipfile(path) else _load_onnx  # TorchScript files are zip archives
    try:
        model = loader(path, threads)
    except ExportError:
        raise
    except Exception as exc:  # onnxruntime and torch.jit raise many types for damaged or foreign files
        raise ExportError(f"{path} is not a readable exported model ({type(exc).__name__}: {exc})") from exc
    if model.metadata.get("kind") != EXPORT_KIND:
        raise ExportError(f"{path} is a model file but not an xecmae export (no kind={EXPORT_KIND!r} in its "
                          "metadata); write it with python -m lib.export")
    return model

