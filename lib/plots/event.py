"""Event display: per-face maps of one event's npho and time, optionally with an MAE prediction.

Rectangular faces are drawn from their geometry grids (rows phi, columns z or r; the outer
face on its fine grid, each cell showing its sensor's value); the hexagonal top/bottom
faces as a scatter at the sensors' (z, r). Sensors not valid for a row are grey. Every
value drawn is physical: the raw input, and MAE predictions as their file holds them
(made physical once, by lib.evaluation.units); nothing here inverts the normalization.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm, Normalize

from lib.config.schema import DataConfig
from lib.data.files import inspect_files
from lib.data.readers import ChunkReader, batch_dtype
from lib.geometry import FACE_NAMES, POSITIONS, grid_ids, hex_ids
from lib.normalization import CHANNEL_INDEX, NormalizationConfig, validity_masks
from lib.plots.style import figure

log = logging.getLogger(__name__)

# rectangular faces: (grid name, what a column is); the other faces are hexagonal
_FACE_GRIDS = {"inner": ("inner", "z"), "outer": ("outer_fine", "z"), "us": ("us", "r"), "ds": ("ds", "r")}
_NS_PER_S = 1e9
_INVALID_COLOUR = "lightgrey"


@dataclass(frozen=True)
class DisplayRow:
    """One row of the display: a value per sensor (4760,), which sensors to colour, and how."""

    label: str
    values: np.ndarray
    shown: np.ndarray
    norm: Normalize
    cmap: str


def read_event(path: str | os.PathLike, index: int, data: DataConfig | None = None) -> dict[str, Any]:
    """Raw "npho" and "time" (4760,) of entry `index` of a ROOT/npz shard, plus "run"/"event"
    when the file has them; branch and tree names from `data` (default DataConfig())."""
    data = data or DataConfig()
    inputs = [data.npho_branch, data.time_branch]
    (info,) = inspect_files([Path(path)], data.tree_name, inputs, None)
    if not 0 <= index < info.n_entries:
        raise ValueError(f"file {path}: event index {index} is out of range; it holds {info.n_entries} events")
    names = inputs + [name for name in ("run", "event") if name in info.branches]
    with ChunkReader([info], data.tree_name, {n: batch_dtype(info.branches[n]) for n in names}) as reader:
        columns = reader.read(0, index, index + 1)
    event = {name: columns[name][0] for name in names}
    event["npho"], event["time"] = event.pop(data.npho_branch), event.pop(data.time_branch)
    return event


def mae_entry(arrays: Mapping[str, np.ndarray], event: Mapping[str, Any], index: int, source: str) -> int:
    """Entry of an MAE prediction file for the displayed event: matched on (run, event) when the
    input has both, else the same entry number `index`. `source` names the file in errors."""
    n_entries = len(arrays["run"])
    if "run" in event and "event" in event:
        matches = np.flatnonzero((arrays["run"] == event["run"]) & (arrays["event"] == event["event"]))
        if matches.size == 0:
            raise ValueError(f"MAE predictions {source} hold no entry with run {event['run']} event {event['event']}")
        return int(matches[0])
    if not 0 <= index < n_entries:
        raise ValueError(f"MAE predictions {source}: entry {index} is out of range; it holds {n_entries} events")
    return index


def _log_norm(values: np.ndarray) -> LogNorm:
    positive = values[values > 0]
    low = max(1.0, float(positive.min())) if positive.size else 1.0
    return LogNorm(low, max(low * 10, float(positive.max()) if positive.size else low * 10))


def _linear_norm(values: np.ndarray, symmetric: bool = False) -> Normalize:
    if values.size == 0:
        return Normalize(-1.0, 1.0)
    if symmetric:
        limit = float(np.abs(values).max()) or 1.0
        return Normalize(-limit, limit)
    low, high = float(values.min()), float(values.max())
    return Normalize(low, high if high > low else low + 1.0)


def _input_rows(event: Mapping[str, Any], npho_valid: np.ndarray, time_valid: np.ndarray) -> list[DisplayRow]:
    time_ns = event["time"] * _NS_PER_S
    return [
        DisplayRow("npho", event["npho"], npho_valid, _log_norm(event["npho"][npho_valid]), "viridis"),
        DisplayRow("time [ns]", time_ns, time_valid, _linear_norm(time_ns[time_valid]), "plasma"),
    ]


def _mae_rows(mae: Mapping[str, np.ndarray], channels: list[str], input_rows: list[DisplayRow]) -> list[DisplayRow]:
    """Mask, predictions (on the input rows' colour scales) and pred - input on masked valid sensors,
    all in the physical units of the MAE prediction file (time shown in ns)."""
    mask = mae["mask"].astype(bool)
    valid = {"npho": mae["npho_valid"].astype(bool), "time": mae["time_valid"].astype(bool)}
    scale = {"npho": 1.0, "time": _NS_PER_S}
    input_row = dict(zip(CHANNEL_INDEX, input_rows))
    everywhere = np.ones_like(mask)
    rows = [DisplayRow("MAE mask", mask.astype(float), valid["npho"], Normalize(0.0, 1.0), "Reds")]
    for channel in channels:
        ref = input_row[channel]
        values = mae[f"pred_{channel}"] * scale[channel]
        rows.append(DisplayRow(f"pred {ref.label}", values, everywhere, ref.norm, ref.cmap))
    for channel in channels:
        error = (mae[f"pred_{channel}"] - mae[f"input_{channel}"]) * scale[channel]
        shown = mask & valid[channel]
        rows.append(DisplayRow(f"pred - input {input_row[channel].label}", error, shown,
                         _linear_norm(error[shown], symmetric=True), "RdBu_r"))
    return rows


def _draw_row(fig, axes, row: DisplayRow) -> None:
    cmap = matplotlib.colormaps[row.cmap].with_extremes(bad=_INVALID_COLOUR)
    values = np.clip(row.values, row.norm.vmin, None) if isinstance(row.norm, LogNorm) else row.values
    for ax, face in zip(axes, FACE_NAMES):
        if face in _FACE_GRIDS:
            grid, column = _FACE_GRIDS[face]
            ids = grid_ids(grid)
            image = np.ma.masked_array(values[ids], mask=~row.shown[ids])
            ax.imshow(image, origin="lower", aspect="auto", interpolation="nearest", norm=row.norm, cmap=cmap)
            ax.set_xlabel(f"{column} column")
        else:
            ids = hex_ids(face)
            z, r = POSITIONS[ids, 2], np.hypot(POSITIONS[ids, 0], POSITIONS[ids, 1])
            shown = row.shown[ids]
            ax.scatter(z[~shown], r[~shown], color=_INVALID_COLOUR, s=60, marker="h")
            ax.scatter(z[shown], r[shown], c=values[ids][shown], norm=row.norm, cmap=cmap, s=60, marker="h")
            ax.set_xlabel("z [cm]")
            ax.set_ylabel("r [cm]")
        ax.set_title(face, fontsize="small")
    axes[0].set_ylabel("phi row")
    fig.colorbar(ScalarMappable(row.norm, cmap), ax=list(axes), label=row.label, fraction=0.02)


def display_rows(event: Mapping[str, Any], mae: Mapping[str, np.ndarray] | None = None,
                 mae_metadata: Mapping[str, Any] | None = None) -> list[DisplayRow]:
    """The rows `plot_event_display` draws (arguments as there), top to bottom."""
    if mae is not None and mae_metadata is None:
        raise ValueError("event display: an MAE entry needs its file's metadata (mae_metadata)")
    if mae_metadata is not None and "units" not in mae_metadata:
        raise ValueError("the MAE prediction file holds normalized values (written by an older xecmae); "
                         "write it again with this version to display it")
    normalization = NormalizationConfig(**mae_metadata["normalization"]) if mae_metadata else NormalizationConfig()
    npho_valid, time_valid = validity_masks(event["npho"], event["time"], normalization)
    rows = _input_rows(event, np.asarray(npho_valid), np.asarray(time_valid))
    if mae is not None:
        rows += _mae_rows(mae, list(mae_metadata["predict_channels"]), rows)
    return rows


def plot_event_display(
    event: Mapping[str, Any],
    out_path: str | os.PathLike,
    mae: Mapping[str, np.ndarray] | None = None,
    mae_metadata: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Path:
    """PNG of one event (`read_event` output): npho (log colour) and time per face; with an MAE
    entry (`mae`: one entry of each branch of an MAE prediction file, `mae_metadata`: its
    metadata) also the mask, the predicted channels and pred - input on masked sensors
    (physical values, as the file holds them). `title` replaces the default one (run and event numbers)."""
    rows = display_rows(event, mae, mae_metadata)
    saved: list[Path] = []
    layout = {"nrows": len(rows), "ncols": len(FACE_NAMES), "squeeze": False, "figsize": (24, 3.2 * len(rows))}
    with figure(Path(out_path), saved, **layout) as (fig, axes):
        for axes_row, row in zip(axes, rows):
            _draw_row(fig, axes_row, row)
        for ax in axes.flat:  # face names on the top row and axis labels on the bottom row only
            ax.minorticks_off()
        for ax in axes[1:].flat:
            ax.set_title("")
        for ax in axes[:-1].flat:
            ax.set_xlabel("")
        ids = ", ".join(f"{key} {event[key]}" for key in ("run", "event") if key in event)
        fig.suptitle(title or (f"event display ({ids})" if ids else "event display"))
    return saved[0]
