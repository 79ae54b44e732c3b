"""Inpainting plots: error vs true npho per face for a model and the baselines, predictions at dead
sensors (plausibility), and the regressor's resolutions in the dead-channel study."""
from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from lib.evaluation.inpainting_masks import MASK_ARTIFICIAL, MASK_DEAD
from lib.evaluation.inpainting_study import headline_keys, scenario_label
from lib.evaluation.inpainting_validation import MaskedSensors
from lib.plots.style import figure

log = logging.getLogger(__name__)

_PANEL_COLUMNS = 4
_LOG_NPHO_RANGE = (-1.0, 5.0)  # log10 of photo-electrons shown in the plausibility histogram
_HIST_BINS = 60
_SHORT_UNITS = {"photo-electrons": "pe"}


def _bin_labels(edges: list[float]) -> list[str]:
    return [f"{lo:g}-{hi:g}" if math.isfinite(hi) else f">{lo:g}" for lo, hi in zip(edges[:-1], edges[1:])]


def plot_inpainting_comparison(metrics: Mapping[str, Any], out_dir: str | os.PathLike,
                               stem: str = "inpainting") -> list[Path]:
    """<stem>_<channel>_vs_true_npho.png per channel of `inpainting_metrics`: the mean |error| of every filler
    in bins of true npho, one panel for all sensors and one per face."""
    saved: list[Path] = []
    labels = _bin_labels(metrics["npho_bin_edges"])
    for channel in ("npho", "time"):
        section = metrics.get(channel)
        if section is None:
            continue
        binned = section["binned"]
        faces = list(next(iter(binned.values())))
        nrows = math.ceil(len(faces) / _PANEL_COLUMNS)
        path = Path(out_dir) / f"{stem}_{channel}_vs_true_npho.png"
        with figure(path, saved, nrows=nrows, ncols=_PANEL_COLUMNS, squeeze=False,
                    figsize=(6 * _PANEL_COLUMNS, 5.5 * nrows)) as (fig, axes):
            fig.suptitle(f"{channel}: mean |filled - true| at masked sensors")
            for ax, face in zip(axes.flat, faces):
                shown = []
                for name, per_face in binned.items():
                    mae = [b["mae"] for b in per_face[face]]
                    shown += mae
                    ax.plot(range(len(labels)), mae, marker="o", label=name)
                ax.set_title(face)
                ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize="small")
                ax.set_xlabel("true npho [pe]")
                ax.set_ylabel(f"mean |error| [{_SHORT_UNITS.get(section['unit'], section['unit'])}]")
                if channel == "npho" and np.nanmax(np.asarray(shown, dtype=float), initial=0.0) > 0:
                    ax.set_yscale("log")
                ax.legend(fontsize="small")
            for ax in list(axes.flat)[len(faces):]:
                ax.set_visible(False)
    return saved


def plot_dead_sensor_predictions(sensors: MaskedSensors, path: str | os.PathLike) -> list[Path]:
    """Histogram of log10(npho) every filler gives dead sensors (no truth), beside the true npho of the
    sensors hidden on purpose: whether the fills of dead channels look like real sensors."""
    saved: list[Path] = []
    dead, hidden = sensors.mask_type == MASK_DEAD, sensors.mask_type == MASK_ARTIFICIAL
    if not dead.any():
        log.info("no dead sensors among the filled ones; plausibility plot skipped")
        return saved
    with figure(Path(path), saved, figsize=(7, 5)) as (fig, ax):
        truth = sensors.truth["npho"][hidden]
        if truth.size:
            ax.hist(_log_npho(truth), bins=_HIST_BINS, range=_LOG_NPHO_RANGE, histtype="stepfilled", alpha=0.3,
                    color="k", density=True, label="truth, sensors hidden on purpose")
        for name, values in sensors.preds.items():
            filled = values["npho"][dead]
            filled = filled[np.isfinite(filled)]
            ax.hist(_log_npho(filled), bins=_HIST_BINS, range=_LOG_NPHO_RANGE, histtype="step", density=True,
                    label=f"{name} at dead sensors ({filled.size})")
        ax.set_xlabel("log10(npho / photo-electron)  (npho < 0.1 at -1)")
        ax.set_ylabel("sensors (normalized)")
        ax.legend(fontsize="small")
    return saved


def _log_npho(npho: np.ndarray) -> np.ndarray:
    return np.log10(np.maximum(npho, 10.0 ** _LOG_NPHO_RANGE[0]))


def plot_dead_channel_study(study: Mapping[str, Any], path: str | os.PathLike) -> list[Path]:
    """One panel per headline resolution: a bar per scenario of the dead-channel study (legend on top)."""
    saved: list[Path] = []
    keys = headline_keys(study)
    if not keys:
        log.warning("the study has no headline resolution; its plot is skipped")
        return saved
    scenarios = list(study["scenarios"])
    ncols = min(_PANEL_COLUMNS, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    with figure(Path(path), saved, nrows=nrows, ncols=ncols, squeeze=False,
                figsize=(4 * ncols, 1.5 + (0.4 * len(scenarios) + 1.0) * nrows)) as (fig, axes):
        for ax, key in zip(axes.flat, keys):
            values = [study["scenarios"][s].get(key, math.nan) for s in scenarios]
            bars = ax.barh(range(len(scenarios)), values, color=[f"C{i}" for i in range(len(scenarios))])
            ax.set_yticks([])
            ax.invert_yaxis()
            ax.set_xlabel(key)
        fig.legend(bars, [scenario_label(s) for s in scenarios], loc="outside upper center",
                   ncols=min(2, len(scenarios)), fontsize="small")
        for ax in list(axes.flat)[len(keys):]:
            ax.set_visible(False)
    return saved
