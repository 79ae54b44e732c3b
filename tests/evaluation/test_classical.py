"""Classical baseline on toy events built here (and, marked slow, on the simulator)."""
from __future__ import annotations

import numpy as np
import pytest

from lib import geometry
from lib.evaluation.classical import BaselineConfig, ClassicalBaseline

N_SENSORS = geometry.N_SENSORS
INNER = geometry.grid_ids("inner")
INNER_XYZ = geometry.POSITIONS[INNER]  # (93, 44, 3)
ROW_PHI = np.mod(np.arctan2(INNER_XYZ[:, 0, 1], INNER_XYZ[:, 0, 0]), 2 * np.pi)  # phi of each grid row
COL_Z = INNER_XYZ[0, :, 2]
R_INNER = float(np.hypot(INNER_XYZ[..., 0], INNER_XYZ[..., 1]).mean())


def _spot_light(rows: np.ndarray, cols: np.ndarray, width: np.ndarray, amplitude: float = 1e4) -> np.ndarray:
    """npho (N, 4760): a Gaussian spot on the inner grid centred at fractional (row, col), 1 pe elsewhere."""
    grid_rows, grid_cols = np.indices(INNER.shape)
    distance_sq = (grid_rows - rows[:, None, None]) ** 2 + (grid_cols - cols[:, None, None]) ** 2
    npho = np.ones((len(rows), N_SENSORS))
    npho[:, INNER] += amplitude * np.exp(-distance_sq / (2 * width[:, None, None] ** 2))
    return npho


def _all_valid(n: int) -> np.ndarray:
    return np.ones((n, N_SENSORS), dtype=bool)


def test_energy_calibration_recovers_a_linear_relation_and_ignores_invalid_sensors():
    rng = np.random.default_rng(0)
    n, slope, intercept = 300, 2.5e-7, 0.004  # E [GeV] = slope * sum(npho) + intercept
    energy = rng.uniform(0.015, 0.06, n)
    fractions = rng.dirichlet(np.ones(N_SENSORS), n)
    npho = fractions * ((energy - intercept) / slope)[:, None]
    npho_valid = rng.random((n, N_SENSORS)) > 0.02
    npho = np.where(npho_valid, npho, 1e10)  # garbage where invalid: must be ignored
    true_sum = np.where(npho_valid, npho, 0).sum(1)
    truth = {"energyTruth": slope * true_sum + intercept}
    baseline = ClassicalBaseline().fit(npho, np.zeros_like(npho), npho_valid, npho_valid, truth)
    np.testing.assert_allclose(baseline.coefficients["energy"], [slope, intercept], rtol=1e-6)
    prediction = baseline.predict(npho[:10], np.zeros_like(npho[:10]), npho_valid[:10], npho_valid[:10])
    assert set(prediction) == {"energy"} and prediction["energy"].shape == (10, 1)
    np.testing.assert_allclose(prediction["energy"][:, 0], truth["energyTruth"][:10], rtol=1e-6)


def _spot_events(rng: np.random.Generator, n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = rng.uniform(5, INNER.shape[0] - 6, n)
    cols = rng.uniform(5, INNER.shape[1] - 6, n)
    width = rng.uniform(0.6, 1.2, n)
    u = np.interp(cols, np.arange(INNER.shape[1]), COL_Z)
    v = -R_INNER * (np.interp(rows, np.arange(INNER.shape[0]), ROW_PHI) - np.pi)  # MEG: v = -(phi - pi) R_in
    depth = 2.0 + 4.0 * width  # deeper showers spread wider
    return _spot_light(rows, cols, width), {"uvwTruth": np.stack([u, v, depth], 1)}


def _fitted_position_baseline(rng: np.random.Generator) -> ClassicalBaseline:
    npho, truth = _spot_events(rng, 200)
    return ClassicalBaseline().fit(npho, np.zeros_like(npho), _all_valid(200), _all_valid(200), truth)


def test_centroid_recovers_a_hot_spot_within_a_cell():
    rng = np.random.default_rng(1)
    baseline = _fitted_position_baseline(rng)
    npho, truth = _spot_events(rng, 50)
    position = baseline.predict(npho, np.zeros_like(npho), _all_valid(50), _all_valid(50))["position"]
    z_pitch = np.diff(COL_Z).mean()
    v_pitch = R_INNER * np.diff(ROW_PHI).mean()
    assert np.abs(position[:, 0] - truth["uvwTruth"][:, 0]).max() < 0.25 * z_pitch
    assert np.abs(position[:, 1] - truth["uvwTruth"][:, 1]).max() < 0.25 * v_pitch
    assert np.abs(position[:, 2] - truth["uvwTruth"][:, 2]).mean() < 0.5  # depth from the spot size


def test_centroid_ignores_an_invalid_hot_sensor():
    baseline = _fitted_position_baseline(np.random.default_rng(3))
    npho = _spot_light(np.array([40.0]), np.array([20.0]), np.array([1.0]))
    npho_valid = _all_valid(1)
    fake = INNER[10, 5]
    npho[0, fake], npho_valid[0, fake] = 1e12, False
    position = baseline.predict(npho, np.zeros_like(npho), npho_valid, npho_valid)["position"]
    assert position[0, 0] == pytest.approx(COL_Z[20], abs=1e-9)
    assert position[0, 1] == pytest.approx(-R_INNER * (ROW_PHI[40] - np.pi), abs=1e-6)


def test_time_recovers_interaction_time_with_distance_correction():
    rng = np.random.default_rng(2)
    n, light_speed_cm_per_s, offset_s = 120, 12e9, 3e-9
    rows = rng.integers(5, INNER.shape[0] - 6, n).astype(float)  # spots centred on a sensor: centroid = that sensor
    cols = rng.integers(5, INNER.shape[1] - 6, n).astype(float)
    npho = _spot_light(rows, cols, np.full(n, 1.0))
    centre = INNER_XYZ[rows.astype(int), cols.astype(int)]
    true_time = rng.normal(0.0, 5e-10, n)
    distance = np.linalg.norm(geometry.POSITIONS[None] - centre[:, None], axis=-1)
    sensor_time = true_time[:, None] + offset_s + distance / light_speed_cm_per_s
    cfg = BaselineConfig(time_depth_shifts_cm=[0.0])
    baseline = ClassicalBaseline(cfg).fit(npho, sensor_time, _all_valid(n), _all_valid(n), {"timeTruth": true_time})
    slowness, offset = baseline.coefficients["time"]
    assert slowness == pytest.approx(1 / light_speed_cm_per_s, rel=1e-6)
    assert offset == pytest.approx(offset_s, rel=1e-6)
    predicted = baseline.predict(npho, sensor_time, _all_valid(n), _all_valid(n))["timing"][:, 0]
    np.testing.assert_allclose(predicted, true_time, atol=1e-14)


def test_bad_input_raises_clear_errors():
    with pytest.raises(ValueError, match="window"):
        BaselineConfig(window=4)
    baseline = ClassicalBaseline()
    with pytest.raises(RuntimeError, match="before fit"):
        baseline.predict(np.ones((2, N_SENSORS)), np.zeros((2, N_SENSORS)), _all_valid(2), _all_valid(2))
    with pytest.raises(ValueError, match="npho must have shape"):
        baseline.fit(np.ones((2, 10)), np.zeros((2, 10)), _all_valid(2), _all_valid(2), {"energyTruth": [1, 2]})
    with pytest.raises(ValueError, match="energyTruth"):
        baseline.fit(np.ones((2, N_SENSORS)), np.zeros((2, N_SENSORS)), _all_valid(2), _all_valid(2), {"run": [1, 2]})


def _simulated_resolutions(n_train: int, n_test: int) -> tuple[dict, dict]:
    """(metrics, truth spread) per task of the baseline fitted on `n_train` simulated events, tested on `n_test`."""
    from lib.sim.events import SimConfig, simulate_events
    from lib.normalization import NormalizationConfig, validity_masks
    from lib.tasks import build_tasks, parse_tasks

    events = simulate_events(SimConfig(), n_train + n_test, np.random.default_rng(0))
    npho_valid, time_valid = validity_masks(events["npho"], events["relative_time"], NormalizationConfig())
    truth = {key: events[key].astype(np.float64) for key in ("energyTruth", "uvwTruth", "timeTruth")}
    train, test = slice(0, n_train), slice(n_train, None)
    baseline = ClassicalBaseline().fit(events["npho"][train], events["relative_time"][train], npho_valid[train],
                                       time_valid[train], {key: value[train] for key, value in truth.items()})
    prediction = baseline.predict(events["npho"][test], events["relative_time"][test], npho_valid[test],
                                  time_valid[test])
    tasks = build_tasks(parse_tasks(["energy", "position", "timing"]))
    truth_by_task = {"energy": truth["energyTruth"][test, None], "position": truth["uvwTruth"][test],
                     "timing": truth["timeTruth"][test, None]}
    metrics = {name: tasks[name].metrics(prediction[name], truth_by_task[name]) for name in tasks}
    return metrics, {name: truth_by_task[name].std(0) for name in tasks}


def _assert_resolved(metrics: dict, spread: dict) -> None:
    assert metrics["energy"]["E_w68"] < 0.5 * spread["energy"][0]
    assert metrics["position"]["u_w68"] < 0.1 * spread["position"][0]
    assert metrics["position"]["v_w68"] < 0.1 * spread["position"][1]
    assert metrics["position"]["w_w68"] < spread["position"][2]
    assert metrics["timing"]["t_w68"] < 0.7 * spread["timing"][0]


def test_baseline_resolves_simulated_events_quick():
    """The fast version in every `make test`: 300 simulated events."""
    _assert_resolved(*_simulated_resolutions(200, 100))


@pytest.mark.slow
def test_baseline_resolves_simulated_events():
    _assert_resolved(*_simulated_resolutions(1000, 500))
