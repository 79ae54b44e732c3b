"""Widths of a residual distribution (the `evaluation.resolution_estimator` choices) and their errors.

- w68: half the central interval holding 68.27 % of the values (lib.tasks.metrics.half_width_68);
- gaussian_core: sigma of a Gaussian fitted (binned, Poisson errors) to the core, within +-2 sigma of its
  centre, iterated from the median and w68;
- sigma_eff: half the smallest interval holding 68.27 % of the values.
All three equal sigma for a Gaussian; on a distribution with tails w68 >= sigma_eff and the core fit ignores
the tails. Errors are bootstrap standard deviations (fixed seed: reproducible).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import curve_fit

from lib.tasks.metrics import CENTRAL_FRACTION_PCT, half_width_68

log = logging.getLogger(__name__)

CORE_WINDOW_SIGMAS = 2.0
_CORE_ITERATIONS = 3
_MIN_CORE_EVENTS = 20
_BOOTSTRAP_SAMPLES = 64


def sigma_eff(values: np.ndarray) -> float:
    """Half the width of the smallest interval holding 68.27 % of `values` (nan if fewer than 2)."""
    values = np.sort(np.asarray(values, dtype=np.float64).ravel())
    n = values.size
    if n < 2:
        return float("nan")
    k = max(2, math.ceil(CENTRAL_FRACTION_PCT / 100.0 * n))
    return float((values[k - 1:] - values[: n - k + 1]).min() / 2.0)


def _gaussian(x: np.ndarray, amplitude: float, mean: float, sigma: float) -> np.ndarray:
    return amplitude * np.exp(-0.5 * ((x - mean) / sigma) ** 2)


def gaussian_core_sigma(values: np.ndarray) -> float:
    """sigma of a Gaussian fitted to the histogram of `values` within CORE_WINDOW_SIGMAS of its centre,
    refitted _CORE_ITERATIONS times (start: median, w68); nan with fewer than _MIN_CORE_EVENTS values or
    when the fit fails."""
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size < _MIN_CORE_EVENTS:
        return float("nan")
    center, sigma = float(np.median(values)), half_width_68(values)
    if not sigma > 0:
        return float("nan")
    for _ in range(_CORE_ITERATIONS):
        low, high = center - CORE_WINDOW_SIGMAS * sigma, center + CORE_WINDOW_SIGMAS * sigma
        core = values[(values >= low) & (values <= high)]
        counts, edges = np.histogram(core, bins=int(np.clip(core.size // 25, 8, 60)), range=(low, high))
        x = 0.5 * (edges[1:] + edges[:-1])
        try:
            (_, center, sigma), _ = curve_fit(_gaussian, x, counts, p0=(counts.max(), center, sigma),
                                              sigma=np.sqrt(np.maximum(counts, 1.0)), absolute_sigma=True)
        except (RuntimeError, ValueError) as err:
            log.warning("Gaussian core fit failed on %d values: %s", values.size, err)
            return float("nan")
        sigma = abs(float(sigma))
    return sigma


ESTIMATORS: dict[str, Callable[[np.ndarray], float]] = {
    "w68": half_width_68, "gaussian_core": gaussian_core_sigma, "sigma_eff": sigma_eff,
}
"""evaluation.resolution_estimator -> the width function (values (N,) -> float)."""


def width_with_error(values: np.ndarray, estimator: str, seed: int = 0) -> tuple[float, float]:
    """(width, bootstrap standard error) of `values` by the named estimator (ESTIMATORS)."""
    width_of = ESTIMATORS[estimator]
    values = np.asarray(values, dtype=np.float64).ravel()
    width = width_of(values)
    if not np.isfinite(width):
        return width, float("nan")
    rng = np.random.default_rng(seed)
    resampled = [width_of(values[rng.integers(0, values.size, values.size)]) for _ in range(_BOOTSTRAP_SAMPLES)]
    return width, float(np.nanstd(resampled, ddof=1))
