"""Calibration of predicted uncertainties (tasks trained with gaussian_nll or beta_nll): is sigma the spread?

Per output, over events with a valid truth and finite pred and sigma > 0:
- mean_sigma: the mean predicted sigma (physical units);
- pull_std: the standard deviation of the pull (pred - truth) / sigma (1 when calibrated; > 1: overconfident);
- coverage_1sigma / coverage_2sigma: the fraction of events with |pull| <= 1 / 2 (68.27 % / 95.45 % when
  calibrated and Gaussian).
"""
from __future__ import annotations

from collections.abc import Mapping
from statistics import NormalDist
from typing import Any

import numpy as np

from lib.tasks import valid_rows


def calibration_summary(residuals: np.ndarray, sigma: np.ndarray, prefix: str) -> dict[str, float]:
    """`{prefix}_mean_sigma`, `_pull_std`, `_coverage_1sigma`, `_coverage_2sigma` of (N,) residuals and their
    predicted sigma (nan where no event has sigma > 0)."""
    residuals, sigma = (np.asarray(a, dtype=np.float64).ravel() for a in (residuals, sigma))
    keep = np.isfinite(residuals) & np.isfinite(sigma) & (sigma > 0)
    if keep.sum() < 2:
        return {f"{prefix}_{key}": float("nan") for key in ("mean_sigma", "pull_std", "coverage_1sigma",
                                                             "coverage_2sigma")}
    pull = residuals[keep] / sigma[keep]
    return {f"{prefix}_mean_sigma": float(sigma[keep].mean()), f"{prefix}_pull_std": float(pull.std(ddof=1)),
            f"{prefix}_coverage_1sigma": float((np.abs(pull) <= 1.0).mean()),
            f"{prefix}_coverage_2sigma": float((np.abs(pull) <= 2.0).mean())}


def calibration_metrics(tasks: Mapping[str, Any], truth: Mapping[str, np.ndarray], pred: Mapping[str, np.ndarray],
                        sigma: Mapping[str, np.ndarray]) -> dict[str, float]:
    """calibration_summary of every output of the tasks that predict sigma, residuals as the task defines them
    (e.g. phi wrapped), over the events with a valid truth."""
    metrics: dict[str, float] = {}
    for name, task in tasks.items():
        if name not in sigma or name not in pred:
            continue
        keep = valid_rows(truth[name]) & np.isfinite(pred[name]).all(1)
        residuals = task.residuals(np.asarray(pred[name][keep], np.float64), np.asarray(truth[name][keep], np.float64))
        for i, output in enumerate(task.output_names):
            metrics.update(calibration_summary(residuals[:, i], sigma[name][keep][:, i], output))
    return metrics


def observed_coverage(residuals: np.ndarray, sigma: np.ndarray, nominal: np.ndarray) -> np.ndarray:
    """Fraction of events inside the central Gaussian interval of each nominal probability, +-z(p) sigma
    (the reliability curve: equal to `nominal` when calibrated)."""
    pull = np.abs(np.asarray(residuals, np.float64) / np.asarray(sigma, np.float64))
    half_widths = np.array([NormalDist().inv_cdf(0.5 + p / 2) for p in nominal])
    return (pull[:, None] <= half_widths[None, :]).mean(0)
