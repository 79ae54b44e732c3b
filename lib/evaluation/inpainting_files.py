"""Inpainting prediction files: per event, the filled sensors with their truth and every filler's value.

A ROOT file with a TTree `tree`, one entry per event: run, event (int64), n_masked (the number of
filled sensors) and, per filled sensor (arrays of length n_masked): sensor_id, mask_type (0 = hidden
on purpose, with truth; 1 = dead, without truth; lib.evaluation.inpainting_masks), truth_npho
(photo-electrons) and truth_time (s) (NaN without truth), pred_npho / pred_time (the evaluated filler)
and <baseline>_npho / <baseline>_time for each baseline. A TTree `metadata` as in every prediction
file (lib.evaluation.prediction_files): "filler", "baselines", "units", "dead_channels", "input".
Written atomically (lib.io.atomic).
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib.evaluation.inpainting_baselines import FILLED_CHANNELS
from lib.evaluation.inpainting_validation import MaskedSensors
from lib.evaluation.prediction_files import METADATA_TREE, TREE_NAME, encode_metadata, read_predictions
from lib.evaluation.units import CHANNEL_UNITS
from lib.io.atomic import atomic_write

log = logging.getLogger(__name__)

INPAINTING_METADATA_KEYS = ("filler", "baselines", "input")
COUNTER = "n_masked"
_ENTRIES_PER_BASKET = 1 << 20  # filled sensors per basket: bounds the memory of one write


def _sensor_columns(sensors: MaskedSensors, filler: str, baselines: Sequence[str]) -> dict[str, np.ndarray]:
    columns = {"sensor_id": sensors.sensor, "mask_type": sensors.mask_type}
    for channel in FILLED_CHANNELS:
        columns[f"truth_{channel}"] = sensors.truth[channel]
        columns[f"pred_{channel}"] = sensors.preds[filler][channel]
        columns.update({f"{name}_{channel}": sensors.preds[name][channel] for name in baselines})
    return columns


def _event_slices(counts: np.ndarray) -> list[slice]:
    """Event ranges of about _ENTRIES_PER_BASKET filled sensors each (at least one event)."""
    ends = np.cumsum(counts)
    slices, start = [], 0
    while start < len(counts):
        stop = max(start + 1, int(np.searchsorted(ends, ends[start] + _ENTRIES_PER_BASKET, side="right")))
        slices.append(slice(start, stop))
        start = stop
    return slices


def write_inpainting_predictions(path: str | os.PathLike, sensors: MaskedSensors, filler: str,
                                 baselines: Sequence[str], metadata: Mapping[str, Any]) -> Path:
    """Write `sensors` (the evaluated `filler` as pred_*, each of `baselines` beside it) with `metadata`
    (needs INPAINTING_METADATA_KEYS but "filler" and "baselines", which are added with "units")."""
    import awkward as ak
    import uproot

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    counts = np.bincount(sensors.row, minlength=len(sensors.run))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    columns = _sensor_columns(sensors, filler, [b for b in baselines if b != filler])
    full = {**metadata, "filler": filler, "baselines": list(baselines), "units": CHANNEL_UNITS}
    encoded = encode_metadata(full, INPAINTING_METADATA_KEYS)

    def jagged(part: slice) -> Any:
        lo, hi = offsets[part.start], offsets[part.stop]
        return ak.zip({name: ak.unflatten(values[lo:hi], counts[part]) for name, values in columns.items()})

    def write(tmp: Path) -> None:
        with uproot.recreate(tmp) as file:
            masked_type = jagged(slice(0, 0)).type.content
            file.mktree(TREE_NAME, {"run": np.int64, "event": np.int64, "masked": masked_type},
                        counter_name=lambda _: COUNTER, field_name=lambda outer, inner: inner)
            for part in _event_slices(counts):
                file[TREE_NAME].extend({"run": sensors.run[part], "event": sensors.event[part], "masked": jagged(part)})
            file[METADATA_TREE] = {key: ak.Array(values) for key, values in encoded.items()}

    atomic_write(path, write)
    log.info("wrote %d filled sensors of %d events to %s", len(sensors.sensor), len(sensors.run), path)
    return path


def read_inpainting_predictions(path: str | os.PathLike) -> tuple[MaskedSensors, dict[str, Any]]:
    """(sensors, metadata) of a file written by write_inpainting_predictions; the evaluated filler's
    values come back under its own name (metadata["filler"])."""
    arrays, metadata = read_predictions(path)
    counts = np.asarray(arrays[COUNTER], np.int64)

    def flat(name: str) -> np.ndarray:
        parts = list(arrays[name])
        return np.concatenate(parts) if parts else np.zeros(0)

    preds = {metadata["filler"]: {c: flat(f"pred_{c}") for c in FILLED_CHANNELS}}
    preds.update({b: {c: flat(f"{b}_{c}") for c in FILLED_CHANNELS} for b in metadata["baselines"]
                  if b != metadata["filler"]})
    sensors = MaskedSensors(
        run=np.asarray(arrays["run"], np.int64), event=np.asarray(arrays["event"], np.int64),
        row=np.repeat(np.arange(len(counts)), counts), sensor=flat("sensor_id").astype(np.int64),
        mask_type=flat("mask_type").astype(np.int8), truth={c: flat(f"truth_{c}") for c in FILLED_CHANNELS},
        preds=preds)
    return sensors, metadata
