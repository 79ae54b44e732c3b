"""Prediction files: per-event regressor / MAE outputs as ROOT files, and reading them back.

Every file holds a TTree `tree` (one entry per event, `run` and `event` as int64) and a
TTree `metadata` with string branches `key` / `value`, the values JSON-encoded.

Regressor files hold, per output name o (e.g. "E", "u", "phi"): truth_o, pred_o,
error_o = pred_o - truth_o (wrapped into [-180, 180) for angles in WRAPPED_OUTPUTS) and
sigma_o when the model predicts an uncertainty, and pass-through columns under their own
names: the conventional reconstruction of the input files (energyReco, uvwRecoFI, ...; see
lib.data.branches) for an event-by-event comparison, and in_fiducial. MAE files hold physical values only: the
raw input as read (input_npho in photo-electrons, input_time in seconds), the mask, the
predicted channels (pred_npho, pred_time) turned into the same units by lib.evaluation.units,
the validity masks and the truth branches under their own names; metadata "units" gives
each channel's unit. Files are written atomically (lib.io.atomic).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lib.config import TASK_SPECS
from lib.geometry import N_SENSORS
from lib.io.atomic import atomic_write
from lib.evaluation.units import CHANNEL_UNITS, physical_predictions
from lib.normalization import CHANNEL_INDEX, NormalizationConfig, describe
from lib.tasks.metrics import wrap_degrees

log = logging.getLogger(__name__)

TREE_NAME = "tree"
METADATA_TREE = "metadata"
WRAPPED_OUTPUTS = ("phi",)  # azimuthal angles in degrees: their residual is wrapped into [-180, 180)
REGRESSION_METADATA_KEYS = ("tasks", "normalization", "checkpoint", "split")
MAE_METADATA_KEYS = ("predict_channels", "checkpoint", "split")
_BASKET_BYTES = 32 << 20  # events are written in baskets of about this size


class PredictionFileError(ValueError):
    """A prediction file cannot be read or written as asked."""


# ---------------------------------------------------------------- metadata


def _json_default(value: Any) -> Any:
    """JSON encoding of the non-JSON types metadata commonly holds (paths, numpy, pydantic models)."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serializable")


def encode_metadata(metadata: Mapping[str, Any], required: tuple[str, ...]) -> dict[str, list[str]]:
    """Branches {"key": [...], "value": [JSON, ...]} of the metadata tree; `required` keys must be given."""
    missing = [key for key in required if key not in metadata]
    if missing:
        raise ValueError(f"prediction metadata lacks the key(s) {missing}; pass them in `metadata` (needed: {required})")
    try:
        values = [json.dumps(value, default=_json_default) for value in metadata.values()]
    except TypeError as err:
        raise ValueError(f"prediction metadata: {err}; convert it to plain numbers/strings/lists/dicts") from err
    return {"key": [str(key) for key in metadata], "value": values}


def _regression_units(outputs: list[str], metadata: Mapping[str, Any]) -> dict[str, str]:
    """Unit of every output: from the tasks in metadata["tasks"], overridden by metadata["units"]."""
    units: dict[str, str] = {}
    for task in metadata.get("tasks", []):
        if task in TASK_SPECS:
            units.update(zip(TASK_SPECS[task].output_names, TASK_SPECS[task].units))
    units.update(metadata.get("units", {}))
    missing = [o for o in outputs if o not in units]
    if missing:
        raise ValueError(
            f"no unit known for output(s) {missing} (tasks {metadata.get('tasks')}); "
            "add them to metadata['units'] as {output: unit}"
        )
    return {o: units[o] for o in outputs}


# ---------------------------------------------------------------- writing


def _event_ids(run: Any, event: Any) -> tuple[np.ndarray, np.ndarray]:
    run, event = np.asarray(run, dtype=np.int64).ravel(), np.asarray(event, dtype=np.int64).ravel()
    if run.shape != event.shape:
        raise ValueError(f"run has {run.size} entries but event has {event.size}; pass one of each per event")
    return run, event


def _column(values: Any, shape: tuple[int, ...], what: str, dtype: Any = np.float64) -> np.ndarray:
    array = np.asarray(values, dtype=dtype)
    if array.shape != shape:
        raise ValueError(f"{what} has shape {array.shape}, expected {shape} (one row per event)")
    return array


def _write_root(path: str | os.PathLike, columns: dict[str, np.ndarray], metadata: dict[str, list[str]]) -> Path:
    """Write the event tree in baskets of about _BASKET_BYTES plus the metadata tree, atomically."""
    import awkward as ak
    import uproot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n_events = len(columns["run"])
    row_bytes = sum(array[:1].nbytes for array in columns.values()) or 1
    basket_events = max(1, _BASKET_BYTES // row_bytes)
    types = {name: (array.dtype, array.shape[1:]) if array.ndim > 1 else array.dtype for name, array in columns.items()}

    def write(tmp: Path) -> None:
        with uproot.recreate(tmp) as file:
            file.mktree(TREE_NAME, types)
            for start in range(0, max(n_events, 1), basket_events):
                file[TREE_NAME].extend({name: array[start : start + basket_events] for name, array in columns.items()})
            file[METADATA_TREE] = {key: ak.Array(values) for key, values in metadata.items()}

    atomic_write(path, write)
    log.info("wrote %d events to %s", n_events, path)
    return path


def _add_passthrough(columns: dict[str, np.ndarray], passthrough: Mapping[str, Any]) -> None:
    """Columns written under their own names, one row per event, in their own dtype."""
    n = len(columns["run"])
    for name, values in passthrough.items():
        if name in columns:
            raise ValueError(f"pass-through column {name!r} clashes with a prediction column; rename it")
        values = np.asarray(values)
        columns[name] = _column(values, (n, *values.shape[1:]), f"passthrough[{name!r}]", values.dtype)


def write_regression_predictions(
    path: str | os.PathLike,
    *,
    run: Any,
    event: Any,
    truth: Mapping[str, Any],
    pred: Mapping[str, Any],
    sigma: Mapping[str, Any] | None,
    metadata: Mapping[str, Any],
    passthrough: Mapping[str, Any] | None = None,
) -> Path:
    """Write regressor predictions: truth_o, pred_o, error_o (and sigma_o) per output name o.

    truth/pred/sigma map output names (TASK.output_names, e.g. "E", "u", "theta") to (N,)
    arrays in physical units; `passthrough` maps column names to (N, ...) arrays written as
    they are (e.g. energyReco, uvwRecoFI). metadata needs REGRESSION_METADATA_KEYS; "kind",
    "outputs", "units" (from the tasks unless given) and "passthrough" are added. Returns the path.
    """
    run, event = _event_ids(run, event)
    shape = run.shape
    if set(pred) != set(truth):
        raise ValueError(f"pred has outputs {sorted(pred)} but truth has {sorted(truth)}; they must be the same")
    sigma = dict(sigma or {})
    if not set(sigma) <= set(pred):
        raise ValueError(f"sigma has output(s) {sorted(set(sigma) - set(pred))} that pred lacks")
    outputs = list(pred)
    columns: dict[str, np.ndarray] = {"run": run, "event": event}
    for output in outputs:
        truth_o = _column(truth[output], shape, f"truth[{output!r}]")
        pred_o = _column(pred[output], shape, f"pred[{output!r}]")
        error = pred_o - truth_o
        columns[f"truth_{output}"], columns[f"pred_{output}"] = truth_o, pred_o
        columns[f"error_{output}"] = wrap_degrees(error) if output in WRAPPED_OUTPUTS else error
        if output in sigma:
            columns[f"sigma_{output}"] = _column(sigma[output], shape, f"sigma[{output!r}]")
    _add_passthrough(columns, passthrough or {})
    units = _regression_units(outputs, metadata)
    full = {**metadata, "kind": "regression", "outputs": outputs, "units": units,
            "passthrough": list(passthrough or {})}
    return _write_root(path, columns, encode_metadata(full, REGRESSION_METADATA_KEYS))


def write_mae_predictions(
    path: str | os.PathLike,
    *,
    run: Any,
    event: Any,
    npho: Any,
    time: Any,
    npho_valid: Any,
    time_valid: Any,
    mask: Any,
    pred: Any,
    truth: Mapping[str, Any],
    norm: NormalizationConfig,
    metadata: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Write MAE predictions in physical units: input_npho / input_time (the raw inputs `npho`,
    `time` (N, 4760) as read), mask, pred_<channel> for each of metadata["predict_channels"]
    (`pred`: the model's normalized outputs, last axis in that order, made physical with
    `norm`), npho_valid, time_valid, the truth branches under their own names and, for each
    inpainting baseline b of `baselines` ({b: {channel: (N, 4760) physical, NaN where not filled}}),
    b_<channel>. metadata needs MAE_METADATA_KEYS; "kind", "normalization", "units" and
    "baselines" are added."""
    run, event = _event_ids(run, event)
    n = len(run)
    channels = list(metadata.get("predict_channels", []))
    unknown = [c for c in channels if c not in CHANNEL_INDEX]
    if not channels or unknown:
        raise ValueError(f"metadata['predict_channels'] = {channels} must name channels from {list(CHANNEL_INDEX)}")
    pred = _column(pred, (n, N_SENSORS, len(channels)), f"pred (predict_channels {channels})", np.float32)
    columns: dict[str, np.ndarray] = {"run": run, "event": event}
    columns["input_npho"] = _column(npho, (n, N_SENSORS), "npho", np.float32)
    columns["input_time"] = _column(time, (n, N_SENSORS), "time", np.float32)
    columns["mask"] = _column(mask, (n, N_SENSORS), "mask", bool)
    for channel, values in physical_predictions(pred, channels, norm).items():
        columns[f"pred_{channel}"] = values
    columns["npho_valid"] = _column(npho_valid, (n, N_SENSORS), "npho_valid", bool)
    columns["time_valid"] = _column(time_valid, (n, N_SENSORS), "time_valid", bool)
    for name, values in (baselines or {}).items():
        for channel, array in values.items():
            what = f"baselines[{name!r}][{channel!r}]"
            columns[f"{name}_{channel}"] = _column(array, (n, N_SENSORS), what, np.float32)
    _add_passthrough(columns, truth)
    full = {**metadata, "kind": "mae", "normalization": describe(norm), "units": CHANNEL_UNITS,
            "baselines": list(baselines or {})}
    return _write_root(path, columns, encode_metadata(full, MAE_METADATA_KEYS))


# ---------------------------------------------------------------- reading


def read_predictions(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(arrays, metadata) of a prediction file: every branch of `tree` as numpy, metadata decoded."""
    import uproot

    path = Path(path)
    if not path.is_file():
        raise PredictionFileError(f"prediction file {path} does not exist; check the path")
    try:
        with uproot.open(path) as file:
            found = [key.split(";")[0] for key in file.keys(recursive=False)]
            missing = [name for name in (TREE_NAME, METADATA_TREE) if name not in found]
            if missing:
                raise PredictionFileError(
                    f"prediction file {path} lacks the tree(s) {missing} (found {found}); "
                    "is it a file written by lib.evaluation.prediction_files?"
                )
            arrays = file[TREE_NAME].arrays(library="np")
            raw = file[METADATA_TREE].arrays(["key", "value"], library="np")
    except PredictionFileError:
        raise
    except Exception as err:  # uproot raises many types for a damaged or non-ROOT file
        raise PredictionFileError(f"prediction file {path}: cannot read it ({type(err).__name__}: {err})") from err
    metadata = {str(key): json.loads(str(value)) for key, value in zip(raw["key"], raw["value"])}
    return dict(arrays), metadata


def regression_outputs(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> list[str]:
    """Output names with truth_o, pred_o and error_o in `arrays`, in the file's order."""
    names = metadata.get("outputs") or [key[len("pred_"):] for key in arrays if key.startswith("pred_")]
    return [o for o in names if all(f"{kind}_{o}" in arrays for kind in ("truth", "pred", "error"))]
