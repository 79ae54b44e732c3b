"""Reliability of predicted uncertainties: observed vs nominal coverage, and the spread vs the predicted sigma."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lib.evaluation.calibration import observed_coverage
from lib.evaluation.prediction_files import regression_outputs
from lib.plots.style import figure

_NOMINAL = np.linspace(0.05, 0.95, 19)
_SIGMA_BINS = 10


def _label(output: str, unit: str) -> str:
    return f"{output} [{unit}]" if unit else output


def plot_reliability(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any],
                     out_dir: str | os.PathLike) -> list[Path]:
    """reliability_<o>.png per output with a predicted sigma_o: left, the fraction of events within +-z(p) sigma
    vs the nominal probability p (on the diagonal when calibrated); right, the RMS residual vs the mean
    predicted sigma in equally populated bins of sigma (on the diagonal when calibrated)."""
    saved: list[Path] = []
    units = metadata.get("units", {})
    for output in regression_outputs(arrays, metadata):
        if f"sigma_{output}" not in arrays:
            continue
        residuals, sigma = arrays[f"error_{output}"], arrays[f"sigma_{output}"]
        keep = np.isfinite(residuals) & np.isfinite(sigma) & (sigma > 0)
        if keep.sum() < _SIGMA_BINS:
            continue
        residuals, sigma = residuals[keep], sigma[keep]
        edges = np.unique(np.quantile(sigma, np.linspace(0, 1, _SIGMA_BINS + 1)))
        index = np.clip(np.searchsorted(edges, sigma, side="right") - 1, 0, len(edges) - 2)
        bins = [index == i for i in range(len(edges) - 1) if (index == i).any()]
        mean_sigma = np.array([sigma[b].mean() for b in bins])
        rms = np.array([np.sqrt(np.mean(residuals[b] ** 2)) for b in bins])
        label = _label(output, units.get(output, ""))
        with figure(Path(out_dir) / f"reliability_{output}.png", saved, ncols=2, figsize=(11, 5)) as (fig, axes):
            axes[0].plot(_NOMINAL, observed_coverage(residuals, sigma, _NOMINAL), "o-", color="k")
            axes[0].plot([0, 1], [0, 1], color="r", linewidth=1, label="calibrated")
            axes[0].set_xlabel("nominal coverage of +-z sigma")
            axes[0].set_ylabel("observed coverage")
            axes[1].plot(mean_sigma, rms, "o", color="k")
            top = float(max(mean_sigma.max(), rms.max()))
            axes[1].plot([0, top], [0, top], color="r", linewidth=1, label="calibrated")
            axes[1].set_xlabel(f"mean predicted sigma of {label}")
            axes[1].set_ylabel(f"RMS of pred - truth of {label}")
            for ax in axes:
                ax.legend(fontsize="small", loc="upper left")
    return saved
