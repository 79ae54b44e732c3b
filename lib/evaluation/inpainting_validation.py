"""Inpainting validation: fill the masked sensors of a data set with every filler and keep, per filled
sensor, where it is, its mask type, its truth and each filler's value (the rows of the inpainting
prediction file and of the metrics)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from lib.evaluation.inference import raw_inputs
from lib.evaluation.inpainting_baselines import BASELINES, FILLED_CHANNELS, Filler, build_baseline, position_branch_for
from lib.evaluation.inpainting_masks import MASK_ARTIFICIAL, NOT_MASKED
from lib.evaluation.inpainting_metrics import inpainting_metrics
from lib.evaluation.inpainting_preprocess import fill_sensors
from lib.geometry import SENSOR_FACE
from lib.normalization import NormalizationConfig

log = logging.getLogger(__name__)

MaskFn = Callable[[Mapping[str, torch.Tensor]], tuple[np.ndarray, np.ndarray]]
"""batch -> (mask (B, 4760) bool, mask_type (B, 4760) int8), e.g. lib.evaluation.inpainting_masks.evaluation_masks."""


@dataclass
class MaskedSensors:
    """Every filled sensor of a data set, events in order: `run`, `event` (N,) per event; per filled sensor
    (M,): `row` (its event's index), `sensor` id, `mask_type`, `truth` {channel: physical value, NaN
    without truth} and `preds` {filler: {channel: physical value, NaN where not filled}}."""

    run: np.ndarray
    event: np.ndarray
    row: np.ndarray
    sensor: np.ndarray
    mask_type: np.ndarray
    truth: dict[str, np.ndarray]
    preds: dict[str, dict[str, np.ndarray]]

    @property
    def face(self) -> np.ndarray:
        """(M,) face code of each filled sensor."""
        return SENSOR_FACE[self.sensor]

    def metrics(self, model: str | None, baselines: list[str]) -> dict[str, Any]:
        """`inpainting_metrics` of these sensors (those with truth are scored)."""
        return inpainting_metrics(self.face, self.truth, self.preds, model, baselines)


@dataclass
class MaskedSensorCollector:
    """Gathers MaskedSensors batch by batch (`add`), then concatenates them (`result`)."""

    _parts: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _events: int = 0

    def _add(self, key: str, value: np.ndarray) -> None:
        self._parts.setdefault(key, []).append(np.asarray(value))

    def add(self, run: Any, event: Any, mask_type: np.ndarray, npho: np.ndarray, time: np.ndarray,
            time_valid: np.ndarray, fills: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """One batch: run / event (B,), mask_type (B, 4760) (NOT_MASKED for sensors not filled), the raw
        npho / time (B, 4760) (the truth of MASK_ARTIFICIAL sensors; time only where `time_valid`) and
        each filler's values {filler: {channel: (B, 4760)}} (a channel left out: not filled)."""
        rows, cols = np.nonzero(mask_type >= 0)
        artificial = mask_type[rows, cols] == MASK_ARTIFICIAL
        self._add("run", np.asarray(run).reshape(-1))
        self._add("event", np.asarray(event).reshape(-1))
        self._add("row", rows + self._events)
        self._add("sensor", cols)
        self._add("mask_type", mask_type[rows, cols])
        self._add("truth/npho", np.where(artificial, npho[rows, cols], np.nan))
        self._add("truth/time", np.where(artificial & time_valid[rows, cols], time[rows, cols], np.nan))
        for name, values in fills.items():
            for channel in FILLED_CHANNELS:
                value = values.get(channel)
                picked = np.full(len(rows), np.nan) if value is None else np.asarray(value, np.float64)[rows, cols]
                self._add(f"preds/{name}/{channel}", picked)
        self._events += len(mask_type)

    def result(self) -> MaskedSensors:
        """Everything added, concatenated."""
        arrays = {key: np.concatenate(parts) for key, parts in self._parts.items()}
        preds: dict[str, dict[str, np.ndarray]] = {}
        for key, value in arrays.items():
            if key.startswith("preds/"):
                _, name, channel = key.split("/")
                preds.setdefault(name, {})[channel] = value
        return MaskedSensors(
            run=arrays["run"].astype(np.int64), event=arrays["event"].astype(np.int64), row=arrays["row"],
            sensor=arrays["sensor"].astype(np.int64), mask_type=arrays["mask_type"].astype(np.int8),
            truth={channel: arrays[f"truth/{channel}"] for channel in FILLED_CHANNELS}, preds=preds)


def _head(batch: Mapping[str, torch.Tensor], n: int) -> dict[str, torch.Tensor]:
    return {key: value[:n] for key, value in batch.items()}


def fill_data_set(loader: Any, fillers: Mapping[str, Filler], masks: MaskFn, norm: NormalizationConfig,
                  max_events: int | None = None) -> MaskedSensors:
    """Fill the sensors `masks` picks in every event of `loader` (built with the RAW_INPUTS columns and the
    normalization `norm`; the first `max_events` events if given) with each filler, which sees them hidden."""
    collector = MaskedSensorCollector()
    seen = 0
    loader.set_epoch(0)
    for batch in loader:
        if max_events is not None and seen >= max_events:
            break
        if max_events is not None:
            batch = _head(batch, max_events - seen)
        mask, mask_type = masks(batch)
        fills = {name: fill_sensors(filler, batch, mask, norm) for name, filler in fillers.items()}
        npho, time, _, time_valid = raw_inputs(batch)
        collector.add(batch["run"].numpy(), batch["event"].numpy(), mask_type, npho, time, time_valid, fills)
        seen += len(mask)
    if seen == 0:
        raise ValueError("inpainting validation: the input holds no events")
    result = collector.result()
    log.info("filled %d sensors in %d events (%d with truth) with %s", len(result.sensor), seen,
             int((result.mask_type == MASK_ARTIFICIAL).sum()), ", ".join(fillers))
    return result


Fills = dict[str, dict[str, np.ndarray]]


def compare_reconstructions(arrays: Mapping[str, np.ndarray], mask: np.ndarray, model: str,
                            reconstructed: Mapping[str, np.ndarray], norm: NormalizationConfig,
                            block_events: int = 1024) -> tuple[MaskedSensors, list[str], Fills]:
    """A model's reconstructions of the `mask` (N, 4760) sensors (`reconstructed` {channel: (N, 4760)}
    physical) beside the baselines' for the same sensors, in blocks of `block_events` events.

    `arrays`: the batch columns as numpy (N, ...): the RAW_INPUTS, npho_valid, time_valid, run, event and
    any truth branches (solid_angle joins when a position branch is among them). Returns (the masked
    sensors, the baselines used, their fills {baseline: {channel: (N, 4760)}})."""
    baselines = [name for name in BASELINES if name == "neighbour" or position_branch_for(arrays) is not None]
    fillers = {name: build_baseline(name, arrays) for name in baselines}
    fills: dict[str, dict[str, list[np.ndarray]]] = {name: {c: [] for c in FILLED_CHANNELS} for name in baselines}
    collector = MaskedSensorCollector()
    for start in range(0, len(mask), block_events):
        block = slice(start, start + block_events)
        batch = {key: torch.from_numpy(np.ascontiguousarray(value[block])) for key, value in arrays.items()}
        block_fills = {name: fill_sensors(filler, batch, mask[block], norm) for name, filler in fillers.items()}
        npho, time, _, time_valid = raw_inputs(batch)
        mask_type = np.where(mask[block], MASK_ARTIFICIAL, NOT_MASKED).astype(np.int8)
        ours = {channel: np.asarray(values)[block] for channel, values in reconstructed.items()}
        collector.add(arrays["run"][block], arrays["event"][block], mask_type, npho, time, time_valid,
                      {model: ours, **block_fills})
        for name, values in block_fills.items():
            for channel in FILLED_CHANNELS:
                fills[name][channel].append(values[channel])
    joined = {name: {c: np.concatenate(parts) for c, parts in values.items()} for name, values in fills.items()}
    return collector.result(), baselines, joined
