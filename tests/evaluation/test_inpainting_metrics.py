"""Inpainting metrics on known errors: per face, in bins of true npho, relative, ratios, MLflow keys."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lib.evaluation.inpainting_metrics import flat_metrics, inpainting_metrics, residual_stats

INNER, OUTER = 0, 1


def known_errors() -> tuple[np.ndarray, dict, dict]:
    """8 sensors: 4 inner (true npho 50, 50, 500, 500), 4 outer (true npho 5000); the model is off by +1 pe
    and +1 ns everywhere, the baseline by +-4 pe and +-2 ns (alternating) and fills no time on the outer face."""
    face = np.array([INNER] * 4 + [OUTER] * 4)
    truth_npho = np.array([50.0, 50.0, 500.0, 500.0, 5000.0, 5000.0, 5000.0, 5000.0])
    truth_time = np.full(8, 30e-9)
    sign = np.array([1.0, -1.0] * 4)
    baseline_time = truth_time + sign * 2e-9
    baseline_time[face == OUTER] = np.nan
    preds = {"model": {"npho": truth_npho + 1.0, "time": truth_time + 1e-9},
             "neighbour": {"npho": truth_npho + 4.0 * sign, "time": baseline_time}}
    return face, {"npho": truth_npho, "time": truth_time}, preds


def test_statistics_of_known_residuals():
    stats = residual_stats(np.array([1.0, -1.0, 3.0, -3.0]))
    w68 = 3.0 - 2.0 * (0.158655 * 3)  # the 15.9th percentile lies 0.476 of the way from -3 to -1
    assert stats == {"n": 4, "bias": 0.0, "mae": 2.0, "rmse": math.sqrt(5.0), "w68": pytest.approx(w68, abs=1e-4)}
    assert math.isnan(residual_stats(np.zeros(0))["mae"])


def test_per_face_metrics_and_ratios_of_known_errors():
    face, truth, preds = known_errors()
    metrics = inpainting_metrics(face, truth, preds, "model", ["neighbour"])
    npho = metrics["npho"]
    assert npho["unit"] == "photo-electrons" and npho["sensors"] == 8
    model, baseline = npho["fillers"]["model"], npho["fillers"]["neighbour"]
    assert set(model) == {"all", "inner", "outer"}
    assert model["all"]["bias"] == pytest.approx(1.0) and model["all"]["mae"] == pytest.approx(1.0)
    assert baseline["inner"]["bias"] == pytest.approx(0.0) and baseline["inner"]["rmse"] == pytest.approx(4.0)
    assert model["inner"]["rel_bias"] == pytest.approx(np.mean([1 / 50, 1 / 50, 1 / 500, 1 / 500]))
    assert model["outer"]["rel_mae"] == pytest.approx(1 / 5000)
    assert npho["ratio"]["model/neighbour"]["all"]["mae"] == pytest.approx(0.25)
    assert npho["ratio"]["model/neighbour"]["outer"]["rmse"] == pytest.approx(0.25)


def test_binned_metrics_follow_true_npho():
    face, truth, preds = known_errors()
    binned = inpainting_metrics(face, truth, preds, "model", ["neighbour"])["npho"]["binned"]["neighbour"]["all"]
    counts = {(b["lo"], b["hi"]): b["n"] for b in binned}
    assert counts == {(0.0, 10.0): 0, (10.0, 100.0): 2, (100.0, 1e3): 2, (1e3, 1e4): 4, (1e4, math.inf): 0}
    assert binned[1]["rel_mae"] == pytest.approx(4 / 50) and binned[3]["rel_mae"] == pytest.approx(4 / 5000)
    assert math.isnan(binned[0]["mae"])


def test_time_in_ns_scored_only_where_every_filler_filled():
    face, truth, preds = known_errors()
    time = inpainting_metrics(face, truth, preds, "model", ["neighbour"])["time"]
    assert time["unit"] == "ns" and time["sensors"] == 4  # the baseline left the outer face's time unfilled
    assert time["unfilled"] == {"model": 0, "neighbour": 4}
    assert time["fillers"]["model"]["all"]["mae"] == pytest.approx(1.0)
    assert time["fillers"]["neighbour"]["all"]["rmse"] == pytest.approx(2.0)
    assert "rel_mae" not in time["fillers"]["model"]["all"]
    assert time["ratio"]["model/neighbour"]["all"] == {"mae": pytest.approx(0.5), "rmse": pytest.approx(0.5)}


def test_a_filler_without_a_channel_sits_it_out_and_unknown_truth_is_not_scored():
    face, truth, preds = known_errors()
    preds["model"]["time"] = np.full(8, np.nan)
    truth["npho"] = truth["npho"].copy()
    truth["npho"][:2] = np.nan  # dead sensors: predicted, no truth
    metrics = inpainting_metrics(face, truth, preds, "model", ["neighbour"])
    assert metrics["npho"]["sensors"] == 6
    assert set(metrics["time"]["fillers"]) == {"neighbour"} and metrics["time"]["ratio"] == {}


def test_flat_metrics_for_mlflow_hold_finite_values_only():
    face, truth, preds = known_errors()
    flat = flat_metrics(inpainting_metrics(face, truth, preds, "model", ["neighbour"]), prefix="inp")
    assert flat["inp/npho/model/all/mae"] == pytest.approx(1.0)
    assert flat["inp/npho/ratio_model_over_neighbour/inner/mae"] == pytest.approx(0.25)
    assert all(math.isfinite(value) for value in flat.values())
    assert not any("binned" in key for key in flat)
