"""Regressor plots from a prediction file: residuals, resolution vs truth, prediction vs truth."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.colors import LogNorm

from lib.config import TASK_SPECS
from lib.plots.history import plot_learning_curves
from lib.plots.reliability import plot_reliability
from lib.plots.style import figure
from lib.evaluation.prediction_files import read_predictions, regression_outputs
from lib.tasks.metrics import CENTRAL_FRACTION_PCT, half_width_68, residual_summary

log = logging.getLogger(__name__)

_TAIL_PCT = (100.0 - CENTRAL_FRACTION_PCT) / 2.0
# Large-N standard error of the 68 % half-width of a Gaussian sample, in units of w68/sqrt(N):
# var(w68) = p (1 - 2p) / (2 N f^2) with p the tail fraction and f the density at the quantile.
_W68_ERROR_FACTOR = math.sqrt(_TAIL_PCT / 100 * (1 - 2 * _TAIL_PCT / 100) / 2) / (math.exp(-0.5) / math.sqrt(2 * math.pi))
_PLOT_RANGE_PCT = (0.5, 99.5)  # histogram ranges cover this central part of the values
_HIST_BINS = 100
_RESOLUTION_BINS = 10
_MIN_EVENTS_PER_BIN = 5


@dataclass(frozen=True)
class BinnedWidth:
    """68 % half-width of residuals in bins of a variable; nan where a bin has too few events."""

    centers: np.ndarray
    width: np.ndarray
    error: np.ndarray
    counts: np.ndarray


def binned_half_width_68(
    x: np.ndarray, residuals: np.ndarray, edges: np.ndarray, min_count: int = _MIN_EVENTS_PER_BIN
) -> BinnedWidth:
    """half_width_68 of `residuals` in the bins [edges[i], edges[i+1]) of `x` (last bin closed),
    with the Gaussian large-N error _W68_ERROR_FACTOR * w68 / sqrt(N); bins with < min_count events are nan."""
    x, residuals, edges = (np.asarray(a, dtype=np.float64) for a in (x, residuals, edges))
    index = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    inside = (x >= edges[0]) & (x <= edges[-1])
    n_bins = len(edges) - 1
    counts = np.bincount(index[inside], minlength=n_bins)
    width = np.full(n_bins, np.nan)
    for i in np.flatnonzero(counts >= min_count):
        width[i] = half_width_68(residuals[inside & (index == i)])
    error = _W68_ERROR_FACTOR * width / np.sqrt(np.maximum(counts, 1))
    return BinnedWidth(0.5 * (edges[1:] + edges[:-1]), width, error, counts)


def _quantile_edges(x: np.ndarray, n_bins: int) -> np.ndarray:
    """Edges of (up to) n_bins equally populated bins of x."""
    return np.unique(np.quantile(x, np.linspace(0.0, 1.0, n_bins + 1)))


def _plot_range(*values: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(np.concatenate(values), _PLOT_RANGE_PCT)
    if high <= low:  # constant values: open a small window around them
        pad = abs(low) * 0.05 or 1.0
        low, high = low - pad, high + pad
    return float(low), float(high)


def _label(output: str, unit: str) -> str:
    return f"{output} [{unit}]" if unit else output


def _finite(*arrays: np.ndarray) -> np.ndarray:
    return np.logical_and.reduce([np.isfinite(a) for a in arrays])


def _grid(n_panels: int) -> dict[str, Any]:
    ncols = min(4, n_panels)
    nrows = math.ceil(n_panels / ncols)
    return {"nrows": nrows, "ncols": ncols, "squeeze": False, "figsize": (5 * ncols, 4 * nrows)}


def plot_residuals(arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any], out_dir: str | os.PathLike) -> list[Path]:
    """residual_<o>.png per output: histogram of error_o with the central 68 % interval shaded
    and bias / 68 % half-width in the legend."""
    saved: list[Path] = []
    units = metadata.get("units", {})
    for output in regression_outputs(arrays, metadata):
        residuals = arrays[f"error_{output}"][_finite(arrays[f"error_{output}"])]
        if residuals.size == 0:
            log.warning("no finite residuals for %s; residual plot skipped", output)
            continue
        unit = units.get(output, "")
        summary = residual_summary(residuals, output)
        low, high = np.percentile(residuals, [_TAIL_PCT, 100.0 - _TAIL_PCT])
        with figure(Path(out_dir) / f"residual_{output}.png", saved) as (fig, ax):
            ax.hist(residuals, bins=_HIST_BINS, range=_plot_range(residuals), histtype="step", color="k",
                    label=f"N = {residuals.size}")
            ax.axvspan(low, high, color="tab:blue", alpha=0.2,
                       label=f"68% interval\nbias = {summary[f'{output}_bias']:.3g} {unit}\n"
                             f"w68 = {summary[f'{output}_w68']:.3g} {unit}")
            ax.set_xlabel(f"pred - truth of {_label(output, unit)}")
            ax.set_ylabel("events")
            ax.legend(fontsize="small")
    return saved


def _resolution_variables(arrays: Mapping[str, np.ndarray]) -> list[str]:
    """True energy and true position outputs that the file holds (as truth_<name>)."""
    names = [*TASK_SPECS["energy"].output_names, *TASK_SPECS["position"].output_names]
    return [name for name in names if f"truth_{name}" in arrays]


def plot_resolution_vs(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any], out_dir: str | os.PathLike
) -> list[Path]:
    """resolution_vs_<x>.png for x in the true energy / u / v / w present: the 68 % half-width
    of each output's residual in equally populated bins of x, one panel per output."""
    saved: list[Path] = []
    units = metadata.get("units", {})
    outputs = regression_outputs(arrays, metadata)
    for variable in _resolution_variables(arrays):
        x_all = arrays[f"truth_{variable}"]
        if not outputs or not np.isfinite(x_all).any():
            continue
        edges = _quantile_edges(x_all[np.isfinite(x_all)], _RESOLUTION_BINS)
        if len(edges) < 2:
            log.warning("true %s is constant; resolution plot vs %s skipped", variable, variable)
            continue
        with figure(Path(out_dir) / f"resolution_vs_{variable}.png", saved, **_grid(len(outputs))) as (fig, axes):
            for ax, output in zip(axes.flat, outputs):
                residuals = arrays[f"error_{output}"]
                keep = _finite(x_all, residuals)
                binned = binned_half_width_68(x_all[keep], residuals[keep], edges)
                ax.errorbar(binned.centers, binned.width, yerr=binned.error,
                            xerr=0.5 * np.diff(edges), fmt="o", color="k", markersize=4)
                ax.set_xlabel(f"true {_label(variable, units.get(variable, ''))}")
                ax.set_ylabel(f"w68 of {_label(output, units.get(output, ''))}")
            for ax in list(axes.flat)[len(outputs):]:
                ax.set_visible(False)
    return saved


def plot_pred_vs_truth(
    arrays: Mapping[str, np.ndarray], metadata: Mapping[str, Any], out_dir: str | os.PathLike
) -> list[Path]:
    """pred_vs_truth_<o>.png per output: 2-D histogram (log colour) of pred vs truth with the diagonal."""
    saved: list[Path] = []
    units = metadata.get("units", {})
    for output in regression_outputs(arrays, metadata):
        truth, pred = arrays[f"truth_{output}"], arrays[f"pred_{output}"]
        keep = _finite(truth, pred)
        if not keep.any():
            log.warning("no finite (truth, pred) pairs for %s; pred-vs-truth plot skipped", output)
            continue
        truth, pred = truth[keep], pred[keep]
        low, high = _plot_range(truth, pred)
        counts, edges, _ = np.histogram2d(truth, pred, bins=_HIST_BINS // 2, range=[(low, high), (low, high)])
        label = _label(output, units.get(output, ""))
        with figure(Path(out_dir) / f"pred_vs_truth_{output}.png", saved, figsize=(6, 5)) as (fig, ax):
            mesh = ax.pcolormesh(edges, edges, np.ma.masked_equal(counts.T, 0), norm=LogNorm(), cmap="viridis")
            fig.colorbar(mesh, ax=ax, label="events")
            ax.plot([low, high], [low, high], color="r", linewidth=1, label="pred = truth")
            ax.set_xlabel(f"true {label}")
            ax.set_ylabel(f"predicted {label}")
            ax.legend(fontsize="small", loc="upper left")
    return saved


def _headline_metrics(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """Losses and 68 % resolutions: the curves worth a figure (everything is in the history file)."""
    names = {key.partition("/")[2] for record in history for key in record}
    return sorted(n for n in names if n.endswith(("loss", "_w68", "_68", "_pct", "_deg")) or n.startswith("loss_"))


def make_regression_plots(
    pred_file: str | os.PathLike, out_dir: str | os.PathLike, history: Sequence[Mapping[str, Any]] | None = None
) -> list[Path]:
    """All regressor plots of a prediction file (plus learning curves when `history` is given)."""
    arrays, metadata = read_predictions(pred_file)
    saved = [
        *plot_residuals(arrays, metadata, out_dir),
        *plot_resolution_vs(arrays, metadata, out_dir),
        *plot_pred_vs_truth(arrays, metadata, out_dir),
        *plot_reliability(arrays, metadata, out_dir),
    ]
    if history:
        saved += plot_learning_curves(history, out_dir, _headline_metrics(history))
    log.info("wrote %d plots to %s", len(saved), out_dir)
    return saved
