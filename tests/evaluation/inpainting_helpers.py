"""Batches and stand-in fillers for the inpainting tests."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from lib.geometry import N_SENSORS
from lib.normalization import NormalizationConfig, normalize


def make_batch(npho: np.ndarray, time: np.ndarray | None = None, **extra: np.ndarray) -> dict[str, torch.Tensor]:
    """A loader-like batch (x, validity masks, raw inputs, run / event, `extra` columns) of raw npho / time."""
    npho = np.asarray(npho, np.float32)
    time = np.zeros_like(npho) if time is None else np.asarray(time, np.float32)
    x, npho_valid, time_valid = normalize(npho, time, NormalizationConfig())
    batch = {"x": x, "npho_valid": npho_valid, "time_valid": time_valid, "npho_raw": npho, "time_raw": time,
             "run": np.full(len(npho), 7, np.int64), "event": np.arange(len(npho), dtype=np.int64), **extra}
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in batch.items()}


def sensor_mask(*sensors: int, events: int = 1) -> torch.Tensor:
    """(events, 4760) bool with the given sensors set in every event."""
    mask = torch.zeros(events, N_SENSORS, dtype=torch.bool)
    mask[:, list(sensors)] = True
    return mask


class RecordingInpainter:
    """Stand-in for a trained inpainter: fills every sensor with `value` (npho) and 1e-9 s (time) unless
    `channels` leaves time out; records the batches and masks it was given."""

    def __init__(self, value: float = 123.0, channels: tuple[str, ...] = ("npho", "time")) -> None:
        self.value, self.channels = value, channels
        self.calls: list[tuple[Mapping[str, torch.Tensor], torch.Tensor]] = []

    def fill(self, batch: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constant values everywhere (the adapter keeps the masked ones)."""
        self.calls.append((batch, mask))
        values = {"npho": torch.full(mask.shape, self.value), "time": torch.full(mask.shape, 1e-9)}
        return {channel: values[channel] for channel in self.channels}
