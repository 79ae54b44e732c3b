"""PNG plots of run outputs: regressor resolution plots (and the energy-resolution fit, the reliability of
predicted sigma), learning curves and event displays (also of the worst-reconstructed events).

Figures are built on matplotlib's Agg canvas (no pyplot state) in mplhep's ROOT style.
"""
from __future__ import annotations

from lib.plots.energy_resolution import plot_energy_resolution
from lib.plots.event import DisplayRow, display_rows, mae_entry, plot_event_display, read_event
from lib.plots.history import history_from_mlflow, load_history, plot_learning_curves
from lib.plots.regression import (
    BinnedWidth,
    binned_half_width_68,
    make_regression_plots,
    plot_pred_vs_truth,
    plot_residuals,
    plot_resolution_vs,
)
from lib.plots.reliability import plot_reliability
from lib.plots.worst_event_display import plot_worst_events

__all__ = [
    "BinnedWidth",
    "DisplayRow",
    "binned_half_width_68",
    "display_rows",
    "history_from_mlflow",
    "load_history",
    "mae_entry",
    "make_regression_plots",
    "plot_energy_resolution",
    "plot_event_display",
    "plot_learning_curves",
    "plot_pred_vs_truth",
    "plot_reliability",
    "plot_residuals",
    "plot_resolution_vs",
    "plot_worst_events",
    "read_event",
]
