"""Calibration of predicted sigma on Gaussian residuals of known width: pull width, coverage, reliability."""
from __future__ import annotations

import numpy as np
import pytest

from lib.config.evaluation_schema import FiducialConfig
from lib.evaluation.calibration import calibration_summary, observed_coverage
from lib.evaluation.inference import quoted_metrics
from lib.tasks import build_tasks, parse_tasks


def _residuals(n: int = 50_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Residuals drawn with a per-event sigma between 0.5 and 3 (so a constant sigma would not do)."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.5, 3.0, n)
    return sigma * rng.standard_normal(n), sigma


def test_calibrated_sigma_gives_pull_width_one_and_gaussian_coverage():
    residuals, sigma = _residuals()
    summary = calibration_summary(residuals, sigma, "E")
    assert summary["E_mean_sigma"] == pytest.approx(1.75, abs=0.02)
    assert summary["E_pull_std"] == pytest.approx(1.0, abs=0.01)
    assert summary["E_coverage_1sigma"] == pytest.approx(0.6827, abs=0.005)
    assert summary["E_coverage_2sigma"] == pytest.approx(0.9545, abs=0.003)


def test_overconfident_sigma_is_seen():
    residuals, sigma = _residuals()
    summary = calibration_summary(residuals, sigma / 2, "E")
    assert summary["E_pull_std"] == pytest.approx(2.0, abs=0.02)
    assert summary["E_coverage_1sigma"] == pytest.approx(0.3829, abs=0.006)  # P(|z| < 0.5)


def test_events_without_a_usable_sigma_are_left_out():
    residuals, sigma = _residuals(1000)
    sigma[:10], residuals[10:20] = 0.0, np.nan
    assert calibration_summary(residuals, sigma, "E")["E_mean_sigma"] == pytest.approx(sigma[20:].mean())
    assert np.isnan(calibration_summary(residuals[:1], sigma[:1], "E")["E_pull_std"])


def test_reliability_curve_is_the_diagonal_when_calibrated():
    residuals, sigma = _residuals()
    nominal = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(observed_coverage(residuals, sigma, nominal), nominal, atol=0.01)
    assert (observed_coverage(residuals, 2 * sigma, nominal) > nominal + 0.05).all()


def test_final_metrics_quote_the_calibration_of_a_task_with_sigma_only():
    tasks = build_tasks(parse_tasks({"energy": {"loss": "beta_nll"}, "position": {}}))
    residuals, sigma = _residuals(4000)
    truth_e = np.random.default_rng(1).uniform(20, 60, 4000)
    uvw = np.zeros((4000, 3))
    result = {"run": np.zeros(4000), "truth": {"energy": truth_e[:, None], "position": uvw},
              "pred": {"energy": (truth_e + residuals)[:, None], "position": uvw + 1.0},
              "sigma": {"energy": sigma[:, None]}, "baseline": {}, "kept": {"uvwTruth": uvw}}
    metrics = quoted_metrics(tasks, result, FiducialConfig(), "sigma_eff")
    for section in ("regressor", "regressor_fiducial"):
        assert metrics[section]["E_pull_std"] == pytest.approx(1.0, abs=0.03)
        assert metrics[section]["E_coverage_2sigma"] == pytest.approx(0.9545, abs=0.01)
        assert not any(key.startswith(("u_", "v_", "w_")) and "pull" in key for key in metrics[section])
        assert "E_sigma_eff" in metrics[section] and "u_sigma_eff" in metrics[section]
    assert "E_pull_std" not in metrics["baseline"]
