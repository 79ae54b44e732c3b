"""Inpainting metrics: how close each filler comes to the truth at masked sensors, per face and in bins of
true npho, and how a model compares with the baselines.

Residual = filled - true, in physical units: npho in photo-electrons, time in ns. Per set of sensors:
n, bias (mean residual), mae (mean |residual|), rmse, w68 (half the central 68.27 % width,
lib.tasks.metrics.half_width_68); for npho also the same of the relative residual (filled - true) / true
(rel_*) over the sensors with true npho >= RELATIVE_MIN_NPHO. Every filler is scored on the same
sensors of a channel: those with a valid truth that every filler of the channel filled (a filler that
fills none of them, e.g. an inpainter without time, sits that channel out); `unfilled` counts, per
filler, the truth sensors it left NaN. `ratio` divides the model's mae, rmse and rel_w68 by each
baseline's (< 1: the model is better).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lib.geometry import FACE_NAMES
from lib.tasks.metrics import half_width_68

log = logging.getLogger(__name__)

NPHO_BIN_EDGES = (0.0, 10.0, 100.0, 1e3, 1e4, math.inf)
"""Bins of true npho (photo-electrons) of the binned metrics."""
RELATIVE_MIN_NPHO = 10.0
"""Relative npho errors are computed over sensors with at least this true npho (photo-electrons)."""
UNITS = {"npho": "photo-electrons", "time": "ns"}
_SCALE = {"npho": 1.0, "time": 1e9}  # input units (photo-electrons, s) -> UNITS
RATIO_METRICS = ("mae", "rmse", "rel_w68")
ALL = "all"


def residual_stats(residual: np.ndarray, prefix: str = "") -> dict[str, float]:
    """{n, bias, mae, rmse, w68} of residuals (keys prefixed by `prefix`); NaN statistics when empty."""
    residual = np.asarray(residual, np.float64).ravel()
    empty = residual.size == 0
    return {
        f"{prefix}n": int(residual.size),
        f"{prefix}bias": math.nan if empty else float(residual.mean()),
        f"{prefix}mae": math.nan if empty else float(np.abs(residual).mean()),
        f"{prefix}rmse": math.nan if empty else float(np.sqrt(np.mean(residual**2))),
        f"{prefix}w68": half_width_68(residual),
    }


def _summary(channel: str, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    scale = _SCALE[channel]
    stats = residual_stats((pred - truth) * scale)
    if channel == "npho":
        large = truth >= RELATIVE_MIN_NPHO
        stats.update(residual_stats((pred[large] - truth[large]) / truth[large], "rel_"))
    return stats


def _face_groups(face: np.ndarray) -> dict[str, np.ndarray]:
    groups = {ALL: np.ones(len(face), dtype=bool)}
    groups.update({name: face == code for code, name in enumerate(FACE_NAMES) if (face == code).any()})
    return groups


def _binned(channel: str, pred: np.ndarray, truth: np.ndarray, true_npho: np.ndarray) -> list[dict[str, Any]]:
    bins = []
    for lo, hi in zip(NPHO_BIN_EDGES[:-1], NPHO_BIN_EDGES[1:]):
        inside = (true_npho >= lo) & (true_npho < hi)
        bins.append({"lo": lo, "hi": hi, **_summary(channel, pred[inside], truth[inside])})
    return bins


def _participants(preds: Mapping[str, Mapping[str, np.ndarray]], channel: str, has_truth: np.ndarray) -> list[str]:
    return [name for name, values in preds.items()
            if channel in values and np.isfinite(np.asarray(values[channel])[has_truth]).any()]


def channel_metrics(channel: str, face: np.ndarray, truth: np.ndarray, true_npho: np.ndarray,
                    preds: Mapping[str, Mapping[str, np.ndarray]], model: str | None,
                    baselines: Sequence[str]) -> dict[str, Any] | None:
    """Metrics of one channel (see the module docstring); None when no filler fills it."""
    has_truth = np.isfinite(truth)
    fillers = _participants(preds, channel, has_truth)
    if not fillers:
        return None
    values = {name: np.asarray(preds[name][channel], np.float64) for name in fillers}
    scored = has_truth & np.logical_and.reduce([np.isfinite(v) for v in values.values()])
    groups = _face_groups(face[scored])
    truth_s, npho_s = truth[scored], true_npho[scored]
    out: dict[str, Any] = {
        "unit": UNITS[channel], "sensors": int(scored.sum()),
        "unfilled": {name: int((has_truth & ~np.isfinite(v)).sum()) for name, v in values.items()},
        "fillers": {}, "binned": {}, "ratio": {},
    }
    for name, value in values.items():
        pred = value[scored]
        out["fillers"][name] = {key: _summary(channel, pred[g], truth_s[g]) for key, g in groups.items()}
        out["binned"][name] = {key: _binned(channel, pred[g], truth_s[g], npho_s[g]) for key, g in groups.items()}
    if model in values:
        for baseline in (b for b in baselines if b in values and b != model):
            out["ratio"][f"{model}/{baseline}"] = {
                key: {m: _ratio(out["fillers"][model][key].get(m), out["fillers"][baseline][key].get(m))
                      for m in RATIO_METRICS if m in out["fillers"][model][key]}
                for key in groups}
    return out


def _ratio(a: float | None, b: float | None) -> float:
    return math.nan if a is None or b is None or not b else float(a / b)


def inpainting_metrics(face: np.ndarray, truth: Mapping[str, np.ndarray],
                       preds: Mapping[str, Mapping[str, np.ndarray]], model: str | None,
                       baselines: Sequence[str]) -> dict[str, Any]:
    """Metrics of every filler at the masked sensors with truth.

    face (M,) face codes; truth {"npho": (M,), "time": (M,)} physical (photo-electrons, s), NaN where
    unknown; preds {filler: {channel: (M,)}} in the same units; `model` the filler compared with each
    of `baselines`. Returns {"npho": ..., "time": ..., "npho_bin_edges": [...]} (channels no filler fills
    are left out)."""
    face = np.asarray(face)
    true_npho = np.asarray(truth["npho"], np.float64)
    out: dict[str, Any] = {}
    for channel in UNITS:
        metrics = channel_metrics(channel, face, np.asarray(truth[channel], np.float64), true_npho, preds, model,
                                  baselines)
        if metrics is not None:
            out[channel] = metrics
    out["npho_bin_edges"] = list(NPHO_BIN_EDGES)
    return out


def flat_metrics(metrics: Mapping[str, Any], prefix: str = "inpaint") -> dict[str, float]:
    """{prefix/channel/filler/face/metric: value} and {prefix/channel/ratio_<model>_over_<baseline>/face/metric}
    of `inpainting_metrics` (no binned values), finite values only: for MLflow."""
    flat: dict[str, float] = {}
    for channel in UNITS:
        section = metrics.get(channel)
        if section is None:
            continue
        tables = {**section["fillers"],
                  **{f"ratio_{pair.replace('/', '_over_')}": value for pair, value in section["ratio"].items()}}
        for name, faces in tables.items():
            for face, stats in faces.items():
                flat.update({f"{prefix}/{channel}/{name}/{face}/{key}": float(value) for key, value in stats.items()
                             if value is not None and math.isfinite(value)})
    return flat


def log_comparison(metrics: Mapping[str, Any], model: str | None) -> None:
    """Log, per channel and face, each filler's mae (and the model / baseline ratios)."""
    for channel in UNITS:
        section = metrics.get(channel)
        if section is None:
            continue
        log.info("inpainting %s: mae in %s on %d masked sensors with truth (unfilled: %s)", channel,
                 section["unit"], section["sensors"], section["unfilled"])
        for face in section["fillers"][next(iter(section["fillers"]))]:
            cells = []
            for name, faces in section["fillers"].items():
                ratio = section["ratio"].get(f"{model}/{name}", {}).get(face, {}).get("mae")
                versus = "" if ratio is None else f" ({model}/{name} {ratio:.2f})"
                cells.append(f"{name} {faces[face]['mae']:.4g}{versus}")
            log.info("  %-7s %s", face, " | ".join(cells))
