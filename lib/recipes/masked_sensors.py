"""The masked-sensor comparison at the end of an MAE or inpainter run: the model's reconstructions of its
validation masks beside the model-free baselines (lib.evaluation.inpainting_baselines: neighbour mean,
solid-angle weighted when the events carry an interaction point), scored on the same sensors by
lib.evaluation.inpainting_metrics. Reported as a table in the log, metrics.json["masked_sensors"],
plots/masked_sensors_<channel>_vs_true_npho.png and MLflow metrics masked/<channel>/<filler>/<face>/<metric>.

A recipe calls `compare_with_baselines` on its prediction arrays (to write the baselines' values into its
prediction file too), then `report_masked_sensors`.
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib.config import to_dict
from lib.engine.tracking import start_tracking
from lib.evaluation.inpainting_metrics import flat_metrics, log_comparison
from lib.evaluation.inpainting_validation import Fills, compare_reconstructions
from lib.evaluation.units import physical_predictions
from lib.io.atomic import atomic_write_text
from lib.normalization import NormalizationConfig

METRICS_NAME = "metrics.json"
METRICS_KEY = "masked_sensors"
PLOT_STEM = "masked_sensors"
MLFLOW_PREFIX = "masked"


def compare_with_baselines(arrays: Mapping[str, np.ndarray], channels: Sequence[str], norm: NormalizationConfig,
                           model_name: str) -> tuple[dict[str, Any], Fills]:
    """(metrics, baseline fills) of a model's reconstructions: `arrays` as a recipe's predict_batches gives them
    ("pred" (N, 4760, C) normalized outputs for `channels`, "mask" (N, 4760) bool, the raw inputs, validity masks,
    run / event and any truth branches) and `norm` the run's normalization. The fills {baseline: {channel:
    (N, 4760) physical, NaN off the mask}} go into the prediction file beside the model's values."""
    reconstructed = physical_predictions(arrays["pred"], list(channels), norm)
    sensors, baselines, fills = compare_reconstructions(arrays, arrays["mask"], model_name, reconstructed, norm)
    return sensors.metrics(model_name, baselines), fills


def report_masked_sensors(cfg: Any, result: Mapping[str, Any], metrics: Mapping[str, Any], model_name: str) -> None:
    """Log the table, write metrics.json["masked_sensors"] (other keys of an existing metrics.json kept), the
    comparison plots, and log the flat metrics and both files to the run's MLflow run (when cfg.mlflow.enabled).
    `result`: the engine's run result (run_dir, global_step, mlflow_run_id)."""
    from lib.plots.inpainting_plots import plot_inpainting_comparison

    run_dir = Path(result["run_dir"])
    log_comparison(metrics, model_name)
    path = run_dir / METRICS_NAME
    written = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    atomic_write_text(path, json.dumps({**written, METRICS_KEY: metrics}, indent=1))
    plot_inpainting_comparison(metrics, run_dir / "plots", stem=PLOT_STEM)
    tracker = start_tracking(cfg, to_dict(cfg), result.get("mlflow_run_id"), is_main=True)
    tracker.log_metrics(flat_metrics(metrics, prefix=MLFLOW_PREFIX), result["global_step"])
    tracker.log_artifacts([path, run_dir / "plots"])
    tracker.end("FINISHED")
