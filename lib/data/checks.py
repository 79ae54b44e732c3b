"""The input values checked on the first chunk, before any model is built.

A loader reads the first chunk of its first file and normalizes it: if no sensor has a valid
npho or none a valid time, or the normalized values of valid sensors are far outside the few
units the model expects, the run would train on nothing (a time loss of exactly 0) or on
garbage, so `check_first_chunk` raises a `DataError` that says what to change. Otherwise it
logs the fractions and ranges it saw.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from lib.config.schema import DataConfig
from lib.data.files import SETTINGS, DataError
from lib.data.plan import Chunk
from lib.data.readers import ChunkReader
from lib.normalization import NormalizationConfig, normalize

log = logging.getLogger(__name__)

MAX_NORMALIZED = 1e3
"""Normalized values of valid sensors beyond this (in magnitude) mean a unit or scale mismatch."""
LOW_FRACTION = 1e-3
"""Below this fraction of valid times the check warns (but lets the run go on)."""


@dataclass(frozen=True)
class InputSummary:
    """What the first chunk looked like: fractions of valid sensors, raw ranges of the valid values
    and the largest normalized magnitude per channel (0 where nothing is valid)."""

    events: int
    npho_valid: float
    time_valid: float
    npho_range: tuple[float, float]
    time_range: tuple[float, float]
    largest_normalized: tuple[float, float]


def _range(values: np.ndarray) -> tuple[float, float]:
    return (float(values.min()), float(values.max())) if values.size else (float("nan"), float("nan"))


def summarize(npho: np.ndarray, time: np.ndarray, norm: NormalizationConfig) -> InputSummary:
    """InputSummary of raw npho / time rows (events, sensors)."""
    x, npho_valid, time_valid = normalize(npho, time, norm)
    masks = (npho_valid, time_valid)
    largest = tuple(float(np.abs(x[..., channel][valid]).max(initial=0.0)) for channel, valid in enumerate(masks))
    return InputSummary(len(npho), float(npho_valid.mean()), float(time_valid.mean()), _range(npho[npho_valid]),
                        _range(time[time_valid]), largest)


def problems(summary: InputSummary, data: DataConfig, norm: NormalizationConfig) -> list[str]:
    """What is wrong with the inputs, each with what to change (empty when they look usable)."""
    npho, time = data.npho_branch, data.time_branch
    found = []
    if summary.npho_valid == 0:
        found.append(f"no sensor has a valid npho in branch {npho!r} (all NaN, inf, fill values above 9e9 or "
                     f"outside the domain of normalization.npho_scheme={norm.npho_scheme}); check {SETTINGS['npho']}")
    elif summary.time_valid == 0 and summary.npho_range[1] < norm.npho_threshold:
        found.append(f"no sensor time is valid: a time counts only where the raw npho is >= "
                     f"normalization.npho_threshold={norm.npho_threshold:g}, and the largest npho in branch {npho!r} "
                     f"is {summary.npho_range[1]:.4g} (a relative npho?); read photon counts (e.g. "
                     f"{SETTINGS['npho']}=npho) or lower normalization.npho_threshold")
    elif summary.time_valid == 0:
        found.append(f"no sensor time is valid: branch {time!r} holds no finite time below 9e9 where npho >= "
                     f"normalization.npho_threshold={norm.npho_threshold:g}; check {SETTINGS['time']}")
    channels = ((npho, summary.npho_range, "npho_scheme / npho_scale"),
                (time, summary.time_range, "time_scale / time_shift (s)"))
    for channel, (branch, (low, high), keys) in enumerate(channels):
        if summary.largest_normalized[channel] > MAX_NORMALIZED:
            found.append(f"branch {branch!r} has values from {low:.4g} to {high:.4g}, which normalize to magnitudes "
                         f"up to {summary.largest_normalized[channel]:.3g} (expected a few units); check its unit "
                         f"against normalization.{keys}")
    return found


def check_first_chunk(reader: ChunkReader, chunk: Chunk, data: DataConfig, norm: NormalizationConfig) -> InputSummary:
    """Summary of the inputs of `chunk` (read with `reader`, which reads npho and time); raises
    DataError naming the file and what to change when they are unusable (see `problems`)."""
    raw = reader.read(chunk.file, chunk.start, chunk.stop)
    npho = raw[data.npho_branch].reshape(chunk.size, -1)
    time = raw[data.time_branch].reshape(chunk.size, -1)
    summary = summarize(npho, time, norm)
    path = reader.files[chunk.file].path
    where = f"file {path}, entries {chunk.start}-{chunk.stop}"
    found = problems(summary, data, norm)
    if found:
        raise DataError(f"{where}: " + "; ".join(found))
    log.info("data check (%s): %.1f %% of npho and %.1f %% of times valid, npho %.4g..%.4g, time %.4g..%.4g",
             where, 100 * summary.npho_valid, 100 * summary.time_valid, *summary.npho_range, *summary.time_range)
    if summary.time_valid < LOW_FRACTION:
        log.warning("only %.3f %% of the sensor times in %s are valid (raw npho >= normalization.npho_threshold="
                    "%g); the time channel will hardly be learned", 100 * summary.time_valid, where,
                    norm.npho_threshold)
    return summary
