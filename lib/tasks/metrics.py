"""Resolution metrics in physical units (numpy) and their DDP-correct gathering.

Conventions used across the project:
- bias: mean residual (pred - truth); rms: sqrt(mean(residual^2)) (includes the bias);
- w68: half the width of the central interval holding 68.27 % of the residuals,
  (q84.135 - q15.865) / 2, equal to sigma for a Gaussian;
- q68: the 68.27th percentile of a non-negative quantity (3-D distance, opening angle).
Metrics are always computed on residuals gathered from every rank (`gather_arrays`),
never averaged over per-rank percentiles.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from lib.geometry.coordinates import angles_to_unit_vectors
from lib.normalization import RAW_MISSING_ABOVE

CENTRAL_FRACTION_PCT = 68.27
_LOW_PCT = (100.0 - CENTRAL_FRACTION_PCT) / 2.0
_HIGH_PCT = 100.0 - _LOW_PCT


def valid_rows(values: Any) -> Any:
    """(N,) bool of an (N, ...) numpy array or torch tensor: rows whose every value is a number,
    neither NaN, inf nor a fill value (|x| > 9e9, the experiment's 1e10 for "missing")."""
    return (abs(values) <= RAW_MISSING_ABOVE).reshape(len(values), -1).all(1)


def half_width_68(values: np.ndarray) -> float:
    """Half the width of the central interval holding 68.27 % of `values` (nan if empty)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return float("nan")
    low, high = np.percentile(values, [_LOW_PCT, _HIGH_PCT])
    return float((high - low) / 2.0)


def quantile_68(values: np.ndarray) -> float:
    """The 68.27th percentile of `values` (for distances and opening angles; nan if empty)."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return float("nan")
    return float(np.percentile(values, CENTRAL_FRACTION_PCT))


def residual_summary(residuals: np.ndarray, prefix: str) -> dict[str, float]:
    """`{prefix}_bias`, `{prefix}_rms`, `{prefix}_w68` of a 1-D residual array."""
    residuals = np.asarray(residuals, dtype=np.float64).ravel()
    empty = residuals.size == 0
    return {
        f"{prefix}_bias": float("nan") if empty else float(residuals.mean()),
        f"{prefix}_rms": float("nan") if empty else float(np.sqrt(np.mean(residuals**2))),
        f"{prefix}_w68": half_width_68(residuals),
    }


def wrap_degrees(delta):
    """Wrap an angle difference in degrees into [-180, 180) (numpy or torch)."""
    return (delta + 180.0) % 360.0 - 180.0


def opening_angles_deg(pred_theta_phi: np.ndarray, true_theta_phi: np.ndarray) -> np.ndarray:
    """Opening angle in degrees between directions given as (N, 2) (theta, phi) in degrees."""
    pred = angles_to_unit_vectors(pred_theta_phi[:, 0], pred_theta_phi[:, 1])
    true = angles_to_unit_vectors(true_theta_phi[:, 0], true_theta_phi[:, 1])
    # atan2(|a x b|, a . b) is accurate for small angles, unlike arccos(a . b)
    cross = np.linalg.norm(np.cross(pred, true), axis=-1)
    return np.rad2deg(np.arctan2(cross, (pred * true).sum(-1)))


def resolution_metrics(tasks: Mapping[str, Any], truth: Mapping[str, np.ndarray],
                       pred: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Every task's resolution metrics (`task.metrics`) over the events whose truth is valid
    (`valid_rows`) and whose prediction is finite, and `skipped_fraction_<task>`, the fraction of
    events left out: the one resolution computation, used per validation epoch and for the final
    evaluation."""
    metrics: dict[str, float] = {}
    for name, task in tasks.items():
        if name not in pred:
            continue
        keep = valid_rows(truth[name]) & np.isfinite(pred[name]).all(1)
        if len(keep):
            metrics[f"skipped_fraction_{name}"] = float(1.0 - keep.mean())
        if keep.sum() >= 2:
            metrics.update(task.metrics(pred[name][keep], truth[name][keep]))
    return metrics


def by_output(tasks: Mapping[str, Any], per_task: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """{task: (N, k)} -> {output name: (N,)} (e.g. position -> u, v, w)."""
    return {output: per_task[name][:, i] for name, task in tasks.items() if name in per_task
            for i, output in enumerate(task.output_names)}


def gather_arrays(arr: np.ndarray | torch.Tensor) -> np.ndarray:
    """Concatenate (along axis 0) the variable-length arrays of every DDP rank, in rank order.

    Returns the input as numpy unchanged when torch.distributed is not initialised. Every rank
    gets the full array. Uses all_gather_object (with NCCL, set the CUDA device of each rank first).
    """
    local = arr.detach().cpu().numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    gathered: list[np.ndarray | None] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, local)
    return np.concatenate(gathered, axis=0)
