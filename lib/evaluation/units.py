"""Physical units of normalized model outputs: THE one place where the input normalization is inverted.

Data flow one way: stages after the loader never invert the normalization to recover a raw
input (what they need from raw values travels with the batch: lib.data.stream.EXTRA_COLUMNS).
Only what the model itself outputs in normalized units, the MAE's and the inpainter's npho / time,
becomes physical here, for the prediction files (lib.evaluation.prediction_files), every plot drawn
from them and the exported inpainter graph.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.normalization import NormalizationConfig, npho_inverse, time_inverse

CHANNEL_UNITS = {"npho": "photo-electrons", "time": "s"}
"""Unit of each channel's physical values (raw inputs and physical predictions)."""
_INVERSES = {"npho": npho_inverse, "time": time_inverse}


def to_physical(values: Any, channel: str, norm: NormalizationConfig) -> Any:
    """Normalized values of one channel ("npho" or "time"; numpy or torch) in CHANNEL_UNITS."""
    return _INVERSES[channel](values, norm)


def physical_predictions(pred: np.ndarray, channels: Sequence[str], norm: NormalizationConfig) -> dict[str, np.ndarray]:
    """{channel: float32 array (...)} in CHANNEL_UNITS of normalized predictions `pred` (..., C),
    whose last axis holds `channels` in order; inverted in float64, stored as float32."""
    pred = np.asarray(pred, np.float64)
    if pred.shape[-1:] != (len(channels),):
        raise ValueError(f"predictions of shape {pred.shape} do not have one last-axis entry per channel {channels}")
    return {channel: np.asarray(to_physical(pred[..., i], channel, norm), np.float32)
            for i, channel in enumerate(channels)}
