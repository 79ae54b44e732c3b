"""Plots (lib.plots): files written per output, binned resolution numbers, history sources, event display."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from lib.geometry import N_SENSORS
from lib.plots import (
    binned_half_width_68,
    display_rows,
    history_from_mlflow,
    load_history,
    mae_entry,
    make_regression_plots,
    plot_event_display,
    plot_learning_curves,
    plot_pred_vs_truth,
    plot_residuals,
    plot_resolution_vs,
    read_event,
)
from lib.evaluation.prediction_files import read_predictions, write_mae_predictions, write_regression_predictions
from lib.normalization import NormalizationConfig, normalize
from tests.conftest import make_events, write_npz
from tests.fixtures_e2e import e2e_data  # noqa: F401 (fixture: an empty MLflow store to copy)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_pngs(paths: list[Path], names: set[str]) -> None:
    assert {p.name for p in paths} == names
    for path in paths:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 1000, path


def regression_arrays(outputs: tuple[str, ...], n: int = 300, seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for output in outputs:
        truth = rng.uniform(1.0, 2.0, n)
        pred = truth + rng.normal(0.0, 0.1, n)
        arrays.update({f"truth_{output}": truth, f"pred_{output}": pred, f"error_{output}": pred - truth})
    return arrays, {"outputs": list(outputs), "units": {o: "cm" for o in outputs}}


# ---------------------------------------------------------------- binned resolution


def test_binned_half_width_matches_direct_numpy():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(0.0, 10.0, 1000), [0.0, 2.0, 2.0, 5.0, 10.0]])  # edges: half-open bins
    residuals = rng.standard_t(3, x.size) * (1.0 + x)
    edges = np.array([0.0, 2.0, 5.0, 9.9, 10.0])
    binned = binned_half_width_68(x, residuals, edges, min_count=15)

    counts, _ = np.histogram(x, edges)
    np.testing.assert_array_equal(binned.counts, counts)
    np.testing.assert_allclose(binned.centers, [1.0, 3.5, 7.45, 9.95])
    for i in range(3):
        inside = (x >= edges[i]) & (x < edges[i + 1])
        low, high = np.percentile(residuals[inside], [15.865, 84.135])
        assert binned.width[i] == pytest.approx((high - low) / 2, rel=1e-3)
    assert counts[3] < 15 and np.isnan(binned.width[3])


def test_binned_half_width_error_matches_the_spread_of_gaussian_samples():
    rng = np.random.default_rng(2)
    n_events, n_samples = 400, 2000
    samples = rng.normal(0.0, 1.0, (n_samples, n_events))
    low, high = np.percentile(samples, [15.865, 84.135], axis=1)
    observed_spread = np.std((high - low) / 2)
    binned = binned_half_width_68(np.zeros(n_events), samples[0], np.array([-1.0, 1.0]))
    assert binned.error[0] == pytest.approx(observed_spread * binned.width[0], rel=0.12)


# ---------------------------------------------------------------- regression plots


def test_residual_and_pred_vs_truth_plots_one_per_output(tmp_path):
    arrays, metadata = regression_arrays(("E", "theta"))
    arrays["error_theta"][:5] = np.nan  # non-finite rows are skipped, not fatal
    assert_pngs(plot_residuals(arrays, metadata, tmp_path), {"residual_E.png", "residual_theta.png"})
    assert_pngs(plot_pred_vs_truth(arrays, metadata, tmp_path), {"pred_vs_truth_E.png", "pred_vs_truth_theta.png"})


def test_resolution_vs_plots_only_the_truths_present(tmp_path):
    arrays, metadata = regression_arrays(("E", "u", "theta"))
    assert_pngs(plot_resolution_vs(arrays, metadata, tmp_path), {"resolution_vs_E.png", "resolution_vs_u.png"})
    arrays, metadata = regression_arrays(("theta",))
    assert plot_resolution_vs(arrays, metadata, tmp_path / "none") == []


def test_make_regression_plots_from_a_file(tmp_path):
    arrays, _ = regression_arrays(("E", "v"), n=200)
    path = write_regression_predictions(
        tmp_path / "pred.root", run=np.zeros(200), event=np.arange(200),
        truth={o: arrays[f"truth_{o}"] for o in ("E", "v")}, pred={o: arrays[f"pred_{o}"] for o in ("E", "v")},
        sigma=None, metadata={"tasks": ["energy", "position"], "normalization": {}, "checkpoint": "c", "split": "val"},
    )
    history = [{"epoch": 1, "train/total_loss": 1.0, "val/total_loss": 1.5}]
    saved = make_regression_plots(path, tmp_path / "plots", history)
    expected = {f"{kind}_{o}.png" for kind in ("residual", "resolution_vs", "pred_vs_truth") for o in ("E", "v")}
    assert_pngs(saved, expected | {"curve_total_loss.png"})


# ---------------------------------------------------------------- learning curves


def test_learning_curves_one_file_per_metric(tmp_path):
    history = [
        {"epoch": 1, "lr": 1e-3, "train/total_loss": 2.0, "val/total_loss": 2.5, "val/E_w68": 0.1},
        {"epoch": 2, "lr": 5e-4, "train/total_loss": 1.0, "train/nll": -0.5},  # no validation this epoch
    ]
    assert_pngs(plot_learning_curves(history, tmp_path),
                {"curve_total_loss.png", "curve_E_w68.png", "curve_nll.png", "lr.png"})


def test_load_history_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.json does not exist"):
        load_history(tmp_path / "nothere.json")
    (tmp_path / "bad.json").write_text('{"epoch": 1}')
    with pytest.raises(ValueError, match="bad.json must hold a JSON list"):
        load_history(tmp_path / "bad.json")


def test_history_from_mlflow_groups_metrics_by_step(tmp_path, e2e_data):
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    shutil.copyfile(e2e_data.mlflow_template, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    run_id = client.create_run(client.create_experiment("plots")).info.run_id
    logged = {"epoch": [(10, 1.0), (20, 2.0)], "train/total_loss": [(10, 3.0), (20, 2.0)], "val/total_loss": [(20, 2.5)]}
    client.log_batch(run_id, metrics=[Metric(key, value, 0, step) for key, points in logged.items()
                                      for step, value in points])
    expected = [{"epoch": 1.0, "train/total_loss": 3.0}, {"epoch": 2.0, "train/total_loss": 2.0, "val/total_loss": 2.5}]
    assert history_from_mlflow(run_id, tracking_uri=uri) == expected
    assert history_from_mlflow(run_id, client=client) == expected
    with pytest.raises(ValueError, match="MLflow run nope not readable"):
        history_from_mlflow("nope", tracking_uri=uri)


# ---------------------------------------------------------------- event display


@pytest.fixture
def shard(tmp_path) -> Path:
    events = make_events(2)
    events["npho"][1, :10] = 1e10  # missing readouts: invalid sensors
    return write_npz(tmp_path / "shard.npz", events)


def test_read_event_and_display(tmp_path, shard):
    events = make_events(2)
    event = read_event(shard, 1)
    np.testing.assert_array_equal(event["time"], events["relative_time"][1])
    assert event["npho"].shape == (N_SENSORS,) and event["npho"][0] == np.float32(1e10)
    assert (event["run"], event["event"]) == (7, 1)
    with pytest.raises(ValueError, match="event index 2 is out of range; it holds 2 events"):
        read_event(shard, 2)
    out = plot_event_display(event, tmp_path / "display.png")
    assert_pngs([out], {"display.png"})


def test_mae_entry_matches_run_and_event():
    arrays = {"run": np.array([7, 7, 8]), "event": np.array([4, 1, 1])}
    assert mae_entry(arrays, {"run": 7, "event": 1}, index=0, source="m.root") == 1
    assert mae_entry(arrays, {"run": 8, "event": 1}, index=0, source="m.root") == 2
    assert mae_entry(arrays, {}, index=2, source="m.root") == 2  # input without run/event: same entry
    with pytest.raises(ValueError, match="m.root hold no entry with run 9 event 1"):
        mae_entry(arrays, {"run": 9, "event": 1}, index=0, source="m.root")
    with pytest.raises(ValueError, match="entry 3 is out of range"):
        mae_entry(arrays, {}, index=3, source="m.root")


def test_display_shows_the_mae_files_physical_values_as_they_are(tmp_path, shard):
    events, norm = make_events(2), NormalizationConfig(npho_scheme="sqrt", time_shift=0.2)
    events["npho"][1, :10] = 1e10
    x, npho_valid, time_valid = normalize(events["npho"], events["relative_time"], norm)
    rng = np.random.default_rng(5)
    path = write_mae_predictions(
        tmp_path / "mae.root", run=events["run"], event=events["event"], npho=events["npho"],
        time=events["relative_time"], npho_valid=npho_valid, time_valid=time_valid,
        mask=rng.random((2, N_SENSORS)) < 0.4, pred=x + rng.normal(0.0, 0.05, x.shape).astype(np.float32),
        truth={}, norm=norm, metadata={"predict_channels": ["npho", "time"], "checkpoint": "m.pt", "split": "val"})
    arrays, metadata = read_predictions(path)
    entry = {name: values[1] for name, values in arrays.items()}
    rows = {row.label: row for row in display_rows(read_event(shard, 1), entry, metadata)}
    np.testing.assert_array_equal(rows["pred npho"].values, entry["pred_npho"])  # drawn as the file holds them
    np.testing.assert_array_equal(rows["pred time [ns]"].values, entry["pred_time"] * 1e9)
    np.testing.assert_array_equal(rows["pred - input npho"].values, entry["pred_npho"] - entry["input_npho"])
    shown = rows["pred - input time [ns]"].shown
    assert (shown == entry["mask"].astype(bool) & entry["time_valid"].astype(bool)).all() and shown.any()
    masked_valid = entry["npho_valid"].astype(bool) & entry["mask"].astype(bool)
    error = rows["pred - input npho"].values[masked_valid] / entry["input_npho"][masked_valid]
    assert np.abs(np.median(error)) < 0.05  # physical: the prediction is near the raw input it reconstructs
    older = {key: value for key, value in metadata.items() if key != "units"}
    with pytest.raises(ValueError, match="holds normalized values"):
        display_rows(read_event(shard, 1), entry, older)
    assert_pngs([plot_event_display(read_event(shard, 1), tmp_path / "mae.png", entry, metadata)], {"mae.png"})
