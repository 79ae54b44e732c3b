"""Inpainting as preprocessing: batches whose chosen sensors are hidden (set to the fill value) or filled,
then normalized again, so that a model downstream (a regressor) sees them as dead or as filled.

Only the forward normalization runs here (lib.normalization.normalize on raw values the batch carries,
lib.data.stream.RAW_INPUTS); nothing is inverted.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lib.data.stream import RAW_INPUTS
from lib.evaluation.export_check import FILL_VALUE
from lib.normalization import NormalizationConfig, normalize

if TYPE_CHECKING:
    from lib.evaluation.inpainting_baselines import Filler

Batch = dict[str, torch.Tensor]


def refilled_batch(batch: Mapping[str, torch.Tensor], mask: np.ndarray, values: Mapping[str, np.ndarray] | None,
                   norm: NormalizationConfig) -> Batch:
    """`batch` with the raw npho / time of the `mask` (B, 4760) sensors replaced, and x and the validity
    masks computed again from the new raw values: by `values` {"npho", "time"} (B, 4760) where finite (a
    sensor without npho keeps the fill value in both channels), or by the fill value 1e10 everywhere
    (`values` None: the sensors become dead)."""
    missing = [name for name in RAW_INPUTS if name not in batch]
    if missing:
        raise ValueError(f"refilling sensors needs the batch columns {missing}: build the loader with "
                         "extras=lib.data.stream.RAW_INPUTS")
    npho, time = (batch[name].cpu().numpy().astype(np.float32, copy=True) for name in RAW_INPUTS)
    if values is None:
        npho[mask] = FILL_VALUE
        time[mask] = FILL_VALUE
    else:
        filled = mask & np.isfinite(values["npho"])
        timed = filled & np.isfinite(values["time"])
        npho[mask], time[mask] = FILL_VALUE, FILL_VALUE
        npho[filled] = values["npho"][filled]
        time[timed] = values["time"][timed]
    x, npho_valid, time_valid = normalize(npho, time, norm)
    new = {"x": x, "npho_valid": npho_valid, "time_valid": time_valid, RAW_INPUTS[0]: npho, RAW_INPUTS[1]: time}
    return {**batch, **{key: torch.from_numpy(value) for key, value in new.items()}}


def fill_sensors(filler: Filler, batch: Mapping[str, torch.Tensor], mask: np.ndarray,
                 norm: NormalizationConfig) -> dict[str, np.ndarray]:
    """`filler`'s values at the `mask` sensors, computed from the batch with those sensors hidden (so no
    filler can see what it fills)."""
    return filler.fill(refilled_batch(batch, mask, None, norm), torch.from_numpy(mask))


class InpaintedLoader:
    """A loader (built with the RAW_INPUTS columns) whose batches come with their dead sensors (npho not
    valid: fill values, NaN) filled by `filler` and normalized again; every other attribute is the
    loader's."""

    def __init__(self, loader: Any, filler: Filler, norm: NormalizationConfig) -> None:
        self.loader, self.filler, self.norm = loader, filler, norm

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            dead = ~batch["npho_valid"].cpu().numpy()
            yield refilled_batch(batch, dead, fill_sensors(self.filler, batch, dead, self.norm), self.norm)

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)
