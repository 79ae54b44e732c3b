"""Fillers: what inpaints masked sensors, the trained inpainter and the model-free baselines alike.

A filler has a `name` and `fill(batch, mask) -> {"npho": (B, 4760), "time": (B, 4760)}`: physical
values (npho in photo-electrons, time in seconds, as the input files hold them) at the sensors of
`mask` (B, 4760) bool, NaN everywhere else and where it cannot fill. `batch` is a loader batch with
the raw inputs (lib.data.stream.RAW_INPUTS) and the validity masks; masked sensors are never used
as inputs. The baselines (what an inpainter must beat):
- "neighbour":   npho and time: the mean over the valid, unmasked same-face neighbours
                 (lib.geometry.neighbours: grid / hex adjacency; where none is usable, the next ring
                 out, up to NEIGHBOUR_RINGS rings);
- "solid_angle": npho_i = Omega_i * sum_j npho_j / sum_j Omega_j over the same neighbours, Omega the
                 light fraction each sensor collects from the event's interaction point
                 (lib.geometry.light, the simulator's function; the point from a position branch:
                 xyzTruth in MC, a reconstruction such as xyzRecoFI in data); where the solid angles
                 say nothing (no usable point, or no usable neighbour sees it) the neighbour mean;
                 time as "neighbour".
`InpainterFiller` makes a trained inpainter (anything with that `fill`) a filler.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np
import torch

from lib.data.files import DataError
from lib.evaluation.inference import raw_inputs
from lib.evaluation.inpainting_preprocess import refilled_batch
from lib.geometry import N_SENSORS, NOMINAL_GEOMETRY, SensorGeometry
from lib.geometry.light import LightCollection, sensor_areas
from lib.geometry.neighbours import neighbour_rings
from lib.normalization import NormalizationConfig
from lib.tasks.metrics import valid_rows

log = logging.getLogger(__name__)

FILLED_CHANNELS = ("npho", "time")
BASELINES = ("neighbour", "solid_angle")
POSITION_BRANCHES = ("xyzTruth", "xyzRecoFI")
"""Interaction-point branches the solid-angle baseline uses by default, in order: MC truth, then the
conventional reconstruction of real data."""
NEIGHBOUR_RINGS = 3
"""Rings of same-face neighbours searched, nearest first, for a masked sensor's usable neighbours."""


class Filler(Protocol):
    """Anything that inpaints: a name and fill(batch, mask) -> {"npho", "time"} (see the module docstring)."""

    name: str

    def fill(self, batch: Mapping[str, torch.Tensor], mask: torch.Tensor) -> dict[str, np.ndarray]: ...


def _unfilled(shape: tuple[int, ...]) -> np.ndarray:
    return np.full(shape, np.nan)


def neighbour_estimate(values: np.ndarray, usable: np.ndarray, mask: np.ndarray,
                       omega: np.ndarray | None = None) -> np.ndarray:
    """(B, S) estimates at the `mask` sensors (NaN elsewhere) from `values` (B, S) of the `usable` sensors
    (B, S) bool of the nearest ring of same-face neighbours holding any: their mean, or with `omega`
    (B, S) their sum times omega_i / (sum of their omega)."""
    out = _unfilled(values.shape)
    rows, cols = np.nonzero(mask)
    for ring in neighbour_rings(NEIGHBOUR_RINGS):
        if rows.size == 0:
            break
        ids = ring[cols]  # (m, K)
        r, j = rows[:, None], np.maximum(ids, 0)
        ok = (ids >= 0) & usable[r, j]
        total = np.where(ok, values[r, j], 0.0).sum(1)
        weight = np.where(ok, 1.0 if omega is None else omega[r, j], 0.0).sum(1)
        done = weight > 0
        scale = 1.0 if omega is None else omega[rows[done], cols[done]]
        out[rows[done], cols[done]] = scale * total[done] / weight[done]
        rows, cols = rows[~done], cols[~done]
    return out


def _as_numpy_mask(mask: Any) -> np.ndarray:
    mask = mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if mask.dtype != bool or mask.ndim != 2 or mask.shape[1] != N_SENSORS:
        raise ValueError(f"a filler's mask must be (B, {N_SENSORS}) bool, got {mask.dtype} {mask.shape}")
    return mask


class NeighbourFiller:
    """Baseline (a) + (c): mean of the valid, unmasked same-face neighbours, for npho and for time."""

    name = "neighbour"

    def fill(self, batch: Mapping[str, torch.Tensor], mask: Any) -> dict[str, np.ndarray]:
        """Neighbour means at the masked sensors (see the module docstring)."""
        mask = _as_numpy_mask(mask)
        npho, time, npho_valid, time_valid = raw_inputs(batch)
        return {"npho": neighbour_estimate(npho, npho_valid & ~mask, mask),
                "time": neighbour_estimate(time, time_valid & ~mask, mask)}


def position_branch_for(branches: Iterable[str], requested: str | None = None) -> str | None:
    """The interaction-point branch of the solid-angle baseline: `requested` (which the input must have),
    else the first of POSITION_BRANCHES the input has (None if it has none)."""
    branches = set(branches)
    if requested is None:
        return next((name for name in POSITION_BRANCHES if name in branches), None)
    if requested not in branches:
        raise DataError(f"the solid_angle baseline needs the interaction-point branch {requested!r}, which the "
                        f"input lacks (it has {sorted(branches)}); name another with --position-branch (x, y, z in cm) "
                        "or leave solid_angle out (--baselines neighbour)")
    return requested


class SolidAngleFiller:
    """Baseline (b) + (c): neighbour npho weighted by the light fraction seen from the interaction point in
    `position_branch` (B, 3) cm; the neighbour mean where that says nothing (the point NaN or a fill value, or
    unseen by every usable neighbour); time as NeighbourFiller. `sensors`: the sensor geometry of the run
    (nominal by default), with the nominal SiPM / PMT areas."""

    name = "solid_angle"

    def __init__(self, position_branch: str, sensors: SensorGeometry = NOMINAL_GEOMETRY) -> None:
        self.position_branch = position_branch
        self.light = LightCollection(sensors.positions, sensors.normals, sensor_areas())
        self._seen_position = False

    def _points(self, batch: Mapping[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """(points (B, 3) float64, usable (B,) bool); refuses a first batch whose points are all unusable."""
        if self.position_branch not in batch:
            raise DataError(f"the solid_angle baseline needs the interaction-point branch {self.position_branch!r}, "
                            f"which the batch lacks (it has {sorted(batch)}); read it from the input files")
        points = batch[self.position_branch].double().cpu().numpy().reshape(len(batch["x"]), -1)
        if points.shape[1] != 3:
            raise DataError(f"position branch {self.position_branch!r} holds {points.shape[1]} values per event; "
                            "the solid_angle baseline needs x, y, z in cm")
        usable = valid_rows(points)
        if not self._seen_position and len(points) and not usable.any():
            raise DataError(f"position branch {self.position_branch!r} holds only NaN or fill values (1e10) in the "
                            f"first {len(points)} events; give a branch with interaction points (xyzTruth in MC, "
                            "xyzRecoFI in data) or leave solid_angle out")
        self._seen_position |= bool(usable.any())
        return np.where(usable[:, None], points, 0.0), usable

    def fill(self, batch: Mapping[str, torch.Tensor], mask: Any) -> dict[str, np.ndarray]:
        """Solid-angle-weighted npho and neighbour-mean time at the masked sensors."""
        mask = _as_numpy_mask(mask)
        npho, time, npho_valid, time_valid = raw_inputs(batch)
        points, usable = self._points(batch)
        omega, _ = self.light.fraction(points)
        weighted = neighbour_estimate(npho, npho_valid & ~mask, mask & usable[:, None], omega.astype(np.float64))
        plain = neighbour_estimate(npho, npho_valid & ~mask, mask)
        return {"npho": np.where(np.isnan(weighted), plain, weighted),
                "time": neighbour_estimate(time, time_valid & ~mask, mask)}


class InpainterFiller:
    """A trained inpainter as a filler: `inpainter.fill(batch, mask)` returns {"npho", "time"} (numpy or
    torch, (B, 4760), physical units, NaN where not filled; a channel it does not predict may be left
    out); values outside the mask are dropped. With `norm` (the inpainter's normalization) the batch's x
    and validity masks are first computed again from its raw inputs, so the inpainter sees its own
    normalization whatever the loader's."""

    def __init__(self, inpainter: Any, norm: NormalizationConfig | None = None, name: str = "inpainter") -> None:
        self.inpainter, self.norm, self.name = inpainter, norm, name

    def fill(self, batch: Mapping[str, torch.Tensor], mask: Any) -> dict[str, np.ndarray]:
        """The inpainter's values at the masked sensors, float64, NaN elsewhere."""
        mask_np = _as_numpy_mask(mask)
        if self.norm is not None:
            batch = refilled_batch(batch, np.zeros_like(mask_np), None, self.norm)
        with torch.no_grad():
            filled = self.inpainter.fill(batch, torch.as_tensor(mask_np))
        out = {}
        for channel in FILLED_CHANNELS:
            values = filled.get(channel)
            if values is None:
                out[channel] = _unfilled(mask_np.shape)
                continue
            if isinstance(values, torch.Tensor):
                values = values.detach().cpu().double().numpy()
            values = np.asarray(values, np.float64)
            if values.shape != mask_np.shape:
                raise ValueError(f"{self.name}.fill returned {channel} of shape {values.shape}, "
                                 f"expected {mask_np.shape}")
            out[channel] = np.where(mask_np, values, np.nan)
        return out


def build_baseline(name: str, branches: Iterable[str], position_branch: str | None = None,
                   sensors: SensorGeometry = NOMINAL_GEOMETRY) -> NeighbourFiller | SolidAngleFiller:
    """The baseline `name` (one of BASELINES) for an input with `branches` (solid_angle: its position branch,
    `position_branch` or the default of `position_branch_for`, else a DataError)."""
    branches = sorted(branches)
    if name == "neighbour":
        return NeighbourFiller()
    if name != "solid_angle":
        raise ValueError(f"unknown baseline {name!r}; use one of {BASELINES}")
    branch = position_branch_for(branches, position_branch)
    if branch is None:
        raise DataError(f"the solid_angle baseline needs an interaction-point branch "
                        f"({' or '.join(POSITION_BRANCHES)}), which the input lacks (it has {branches}); "
                        "name one with --position-branch or leave solid_angle out (--baselines neighbour)")
    return SolidAngleFiller(branch, sensors)
