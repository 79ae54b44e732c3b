"""Classical (non-learned) reference estimators of energy, position and time.

- energy:   E = a * (sum of valid npho) + b, least squares on the training set;
- position: npho-weighted centroid of the inner-face sensors in a window around the
            hottest one, projected to the radius r_inner + w and turned into (u, v, w)
            with the project's convention (lib.geometry.coordinates.uvw_from_xyz);
            depth w = a * (hottest / window light) + b (the peak fraction falls as the
            shower starts deeper and its light spreads), least squares;
- timing:   npho-weighted mean over the brightest valid sensors of
            t_sensor - s * |sensor - light centre|, minus an offset, where the light
            centre is the position estimate moved deeper by a shift; the slowness
            s = 1 / c_eff (weighted least squares over sensors), the offset (mean over
            events) and the shift (best of a few candidates) are fitted on the training set.
Inputs are RAW npho (photo-electrons) and time (seconds) with explicit validity masks;
outputs use the task names and shapes of lib.tasks so the same metrics apply.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import torch

from lib import geometry
from lib.config.evaluation_schema import BaselineConfig
from lib.geometry.coordinates import uvw_from_xyz
from lib.geometry.sensors import INNER_RADIUS
from lib.tasks.metrics import half_width_68

log = logging.getLogger(__name__)

_BLOCK_EVENTS = 2048  # events per feature block: bounds the temporary (block, 4760) arrays


def _to_numpy(array, dtype=np.float64) -> np.ndarray:
    out = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    return out.astype(dtype, copy=False)


def _sensor_array(array, name: str, dtype=np.float64) -> np.ndarray:
    out = _to_numpy(array, dtype)
    if out.ndim != 2 or out.shape[1] != geometry.N_SENSORS:
        raise ValueError(f"baseline: {name} must have shape (N, {geometry.N_SENSORS}), got {out.shape}")
    return out


def _fit_line(x: np.ndarray, y: np.ndarray, what: str, weights: np.ndarray | None = None) -> np.ndarray:
    """(slope, intercept) of y = slope * x + intercept by (weighted) least squares over finite rows."""
    weights = np.ones_like(x) if weights is None else weights
    keep = np.isfinite(x) & np.isfinite(y) & (weights > 0)
    if keep.sum() < 2 or np.ptp(x[keep]) == 0:
        raise ValueError(f"baseline: cannot fit {what}: need >= 2 events with finite, distinct inputs")
    return np.polyfit(x[keep], y[keep], 1, w=np.sqrt(weights[keep]))


class ClassicalBaseline:
    """Fit on training events, then predict {task name: (N, n_outputs)} for energy, position, timing."""

    def __init__(self, cfg: BaselineConfig | None = None):
        self.cfg = cfg or BaselineConfig()
        self.coefficients: dict[str, np.ndarray] = {}  # "energy", "depth", "time": (slope, intercept)
        self.time_depth_shift_cm = 0.0

    # --- features --------------------------------------------------------------------------------
    def _features(self, npho, time, npho_valid, time_valid) -> dict[str, np.ndarray]:
        npho = _sensor_array(npho, "npho")
        time = _sensor_array(time, "time")
        npho_valid = _sensor_array(npho_valid, "npho_valid", bool)
        time_valid = _sensor_array(time_valid, "time_valid", bool)
        blocks = [
            self._block_features(npho[s], time[s], npho_valid[s], time_valid[s])
            for s in (slice(i, i + _BLOCK_EVENTS) for i in range(0, len(npho), _BLOCK_EVENTS))
        ]
        return {key: np.concatenate([block[key] for block in blocks]) for key in blocks[0]}

    def _block_features(self, npho, time, npho_valid, time_valid) -> dict[str, np.ndarray]:
        light = np.where(npho_valid, npho, 0.0)
        centroid, peak_fraction = self._inner_centroid(light)
        timed = npho_valid & time_valid
        k = min(self.cfg.time_sensors, geometry.N_SENSORS)
        brightness = np.where(timed, light, -np.inf)
        brightest = np.argpartition(-brightness, k - 1, axis=1)[:, :k]
        picked_light = np.take_along_axis(brightness, brightest, 1)
        return {
            "light_sum": light.sum(1),
            "centroid": centroid,
            "peak_fraction": peak_fraction,
            "time_sensor_xyz": geometry.POSITIONS[brightest],
            "time_sensor_t": np.where(np.isfinite(picked_light), np.take_along_axis(time, brightest, 1), 0.0),
            "time_sensor_weight": np.where(np.isfinite(picked_light), np.maximum(picked_light, 0.0), 0.0),
        }

    def _inner_centroid(self, light: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Light-weighted centroid xyz (N, 3) in the window around the hottest inner sensor and
        the hottest sensor's fraction of the window light (NaN where the window sees no light)."""
        grid = geometry.grid_ids("inner")
        height, width = grid.shape
        inner = np.maximum(light[:, grid], 0.0)  # (N, H, W); negative counts carry no position information
        hottest = inner.reshape(len(light), -1).argmax(1)
        offsets = np.arange(self.cfg.window) - self.cfg.window // 2
        rows = (hottest // width)[:, None] + offsets
        cols = (hottest % width)[:, None] + offsets
        inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
        rows, cols = np.clip(rows, 0, height - 1)[:, :, None], np.clip(cols, 0, width - 1)[:, None, :]
        window_light = np.where(inside, inner[np.arange(len(light))[:, None, None], rows, cols], 0.0)
        window_xyz = geometry.POSITIONS[grid[rows, cols]]  # (N, w, w, 3)
        total = window_light.sum((1, 2))
        seen = total > 0
        safe_total = np.where(seen, total, 1.0)
        centroid = (window_light[..., None] * window_xyz).sum((1, 2)) / safe_total[:, None]
        peak_fraction = inner.reshape(len(light), -1).max(1) / safe_total
        return np.where(seen[:, None], centroid, np.nan), np.where(seen, peak_fraction, np.nan)

    # --- estimators ------------------------------------------------------------------------------
    def _depth(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        if "depth" not in self.coefficients:
            return np.zeros(len(features["peak_fraction"]))
        return np.polyval(self.coefficients["depth"], features["peak_fraction"])

    @staticmethod
    def _shower_point(features: Mapping[str, np.ndarray], depth: np.ndarray) -> np.ndarray:
        """The centroid moved radially to r = r_inner + depth (N, 3)."""
        centroid = features["centroid"]
        radial_scale = (INNER_RADIUS + depth) / np.hypot(centroid[:, 0], centroid[:, 1])
        return np.stack([centroid[:, 0] * radial_scale, centroid[:, 1] * radial_scale, centroid[:, 2]], 1)

    @staticmethod
    def _time_samples(features: Mapping[str, np.ndarray], point: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per chosen sensor: distance to the shower point (N, k) cm and raw time (N, k) s."""
        distance = np.linalg.norm(features["time_sensor_xyz"] - point[:, None, :], axis=-1)
        return distance, features["time_sensor_t"]

    # --- public API ------------------------------------------------------------------------------
    def fit(self, npho, time, npho_valid, time_valid, truth: Mapping[str, np.ndarray]) -> ClassicalBaseline:
        """Calibrate on training events (N, 4760) raw arrays + masks; truth holds any of
        energyTruth (N,), uvwTruth (N, 3), timeTruth (N,). Estimators without truth are not fitted."""
        truth = {key: _to_numpy(value) for key, value in truth.items()}
        if not {"energyTruth", "uvwTruth", "timeTruth"} & set(truth):
            raise ValueError(f"baseline.fit: truth has {sorted(truth)}; give energyTruth, uvwTruth and/or timeTruth")
        features = self._features(npho, time, npho_valid, time_valid)
        n_events = len(features["light_sum"])
        wrong_length = {key: len(value) for key, value in truth.items() if len(value) != n_events}
        if wrong_length:
            raise ValueError(f"baseline.fit: truth lengths {wrong_length} differ from the {n_events} events")
        self.coefficients = {}
        if "energyTruth" in truth:
            self.coefficients["energy"] = _fit_line(features["light_sum"], truth["energyTruth"], "energy vs npho sum")
        if "uvwTruth" in truth:
            depth = truth["uvwTruth"][:, 2]
            self.coefficients["depth"] = _fit_line(features["peak_fraction"], depth, "depth vs peak fraction")
        if "timeTruth" in truth:
            self._fit_time(features, truth["timeTruth"])
        log.info("classical baseline fitted: %s", {k: v.tolist() for k, v in self.coefficients.items()})
        return self

    def _fit_time(self, features: Mapping[str, np.ndarray], true_time: np.ndarray) -> None:
        best_width = np.inf
        for shift in self.cfg.time_depth_shifts_cm:
            light_centre = self._shower_point(features, self._depth(features) + shift)
            distance, sensor_time = self._time_samples(features, light_centre)
            slowness, _ = _fit_line(
                distance.ravel(),
                (sensor_time - true_time[:, None]).ravel(),
                "sensor delay vs distance",
                features["time_sensor_weight"].ravel(),
            )
            residual = self._event_time(features, distance, sensor_time, slowness) - true_time
            offset = np.nanmean(residual)
            width = half_width_68(residual[np.isfinite(residual)])
            if width < best_width:
                best_width, self.time_depth_shift_cm = width, shift
                self.coefficients["time"] = np.array([slowness, offset])

    @staticmethod
    def _event_time(features, distance: np.ndarray, sensor_time: np.ndarray, slowness: float) -> np.ndarray:
        """(N,) npho-weighted mean of sensor_time - slowness * distance (NaN without timed sensors)."""
        weight = features["time_sensor_weight"]
        weight_sum = weight.sum(1)
        mean = (weight * (sensor_time - slowness * distance)).sum(1) / np.where(weight_sum > 0, weight_sum, 1.0)
        return np.where(weight_sum > 0, mean, np.nan)

    def predict(self, npho, time, npho_valid, time_valid) -> dict[str, np.ndarray]:
        """{"energy": (N, 1) GeV, "position": (N, 3) cm (u, v, w), "timing": (N, 1) s} for the fitted
        estimators (NaN for events whose inner face or brightest sensors see no light)."""
        if not self.coefficients:
            raise RuntimeError("ClassicalBaseline.predict called before fit")
        features = self._features(npho, time, npho_valid, time_valid)
        depth = self._depth(features)
        point = self._shower_point(features, depth)
        out: dict[str, np.ndarray] = {}
        if "energy" in self.coefficients:
            out["energy"] = np.polyval(self.coefficients["energy"], features["light_sum"])[:, None]
        if "depth" in self.coefficients:
            out["position"] = uvw_from_xyz(point)
        if "time" in self.coefficients:
            slowness, offset = self.coefficients["time"]
            light_centre = self._shower_point(features, depth + self.time_depth_shift_cm)
            distance, sensor_time = self._time_samples(features, light_centre)
            out["timing"] = (self._event_time(features, distance, sensor_time, slowness) - offset)[:, None]
        return out

