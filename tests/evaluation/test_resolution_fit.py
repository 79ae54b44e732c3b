"""Resolution estimators on distributions of known width, and the fit of sigma_E / E = a/sqrt(E) (+) b (+) c/E
on events made with known a, b, c."""
from __future__ import annotations

import numpy as np
import pytest

from lib.config.evaluation_schema import EvaluationConfig, ResolutionEstimator
from lib.evaluation.resolution_estimators import ESTIMATORS, gaussian_core_sigma, sigma_eff, width_with_error
from lib.evaluation.resolution_fit import (
    binned_relative_resolution, energy_resolution_report, fit_resolution, relative_resolution, report_summary,
    summary_metrics,
)
from lib.tasks.metrics import half_width_68

A, B, C = 0.01, 0.02, 0.001  # sqrt(GeV), 1, GeV


def _events(seed: int, n: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    energy = rng.uniform(0.01, 0.1, n)
    return energy, energy * (1 + relative_resolution(energy, A, B, C) * rng.standard_normal(n))


def test_the_config_offers_exactly_the_estimators_there_are():
    assert set(ResolutionEstimator.__args__) == set(ESTIMATORS)
    assert EvaluationConfig().resolution_estimator == "w68"
    with pytest.raises(ValueError, match="resolution_estimator"):
        EvaluationConfig(resolution_estimator="fwhm")


@pytest.mark.parametrize("estimator", sorted(ESTIMATORS))
def test_each_estimator_gives_sigma_of_a_gaussian_with_its_error(estimator):
    values = np.random.default_rng(0).normal(3.0, 2.0, 20_000)
    width, error = width_with_error(values, estimator)
    assert 0.005 < error < 0.05
    assert width == pytest.approx(2.0, abs=3 * error)


def test_on_a_core_with_tails_the_estimators_differ_as_they_should():
    """90 % N(0, 1) + 10 % N(0, 5): the core fit sees the core, sigma_eff is narrower than w68, both above 1."""
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.normal(0, 1, 90_000), rng.normal(0, 5, 10_000)])
    core, effective, central = gaussian_core_sigma(values), sigma_eff(values), half_width_68(values)
    assert core == pytest.approx(1.0, abs=0.05)
    assert 1.0 < effective <= central


def test_sigma_eff_is_half_the_smallest_interval_holding_68_percent():
    """On a skewed sample it finds the dense side: 0..99 plus 30 far values; w68 reaches into the far ones."""
    values = np.concatenate([np.arange(100.0), np.linspace(1000, 2000, 30)])
    assert sigma_eff(values) == pytest.approx(44.0)  # 130 values: ceil(0.6827 * 130) = 89 values span 88
    assert half_width_68(values) > 400


@pytest.mark.parametrize("estimator", ["w68", "sigma_eff"])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_fit_recovers_known_a_b_c_within_errors(estimator, seed):
    energy, pred = _events(seed)
    fit = fit_resolution(binned_relative_resolution(energy, pred, estimator, 12))
    for term, true in zip("abc", (A, B, C)):
        value, error = getattr(fit, term), getattr(fit, term + "_err")
        assert error < 0.25 * true, term  # the fit constrains each term ...
        assert abs(value - true) < 3 * error, (term, value, error)  # ... and finds the true one
    assert fit.ndof == 9 and fit.chi2 < 30


def test_a_term_that_is_not_there_fits_to_zero_with_a_usable_error():
    rng = np.random.default_rng(2)
    energy = rng.uniform(0.01, 0.1, 60_000)
    pred = energy * (1 + relative_resolution(energy, A, B, 0.0) * rng.standard_normal(energy.size))
    fit = fit_resolution(binned_relative_resolution(energy, pred, "w68", 12))
    assert fit.c < 3 * fit.c_err < 3 * C  # compatible with 0, and the error still says how far c could be
    assert abs(fit.a - A) < 3 * fit.a_err and abs(fit.b - B) < 3 * fit.b_err


def test_the_fit_sees_a_worse_detector():
    energy, pred = _events(0)
    worse = energy * (1 + (pred / energy - 1) * 2)  # every resolution term doubled
    fit = fit_resolution(binned_relative_resolution(energy, worse, "w68", 12))
    assert fit.a == pytest.approx(2 * A, rel=0.15) and fit.b == pytest.approx(2 * B, rel=0.3)


def test_too_few_bins_give_no_fit_and_invalid_truth_is_left_out():
    energy, pred = _events(0, n=3_000)
    energy[:100] = np.nan
    energy[100:200] = 1e10
    points = binned_relative_resolution(energy, pred, "w68", 3)
    assert points.counts.sum() == 2_800 and fit_resolution(points) is None


def test_report_quotes_regressor_and_baseline_for_all_events_and_the_fiducial_volume():
    energy, pred = _events(0, n=20_000)
    baseline = energy * (1 + 2 * (pred / energy - 1))
    result = {"truth": {"energy": energy[:, None]}, "pred": {"energy": pred[:, None]},
              "baseline": {"energy": baseline[:, None]}}
    inside = np.arange(len(energy)) % 2 == 0
    summary = report_summary(energy_resolution_report(result, inside, "w68", 8), "w68")
    assert set(summary) >= {"all", "fiducial", "estimator", "units"}
    for selection in ("all", "fiducial"):
        regressor, base = summary[selection]["regressor"], summary[selection]["baseline"]
        assert base["fit"]["a"] > regressor["fit"]["a"] * 1.5
    assert sum(summary["fiducial"]["regressor"]["points"]["events"]) == inside.sum()
    flat = summary_metrics(summary)
    assert flat["energy_fit/fiducial_baseline_a"] == summary["fiducial"]["baseline"]["fit"]["a"]
    assert energy_resolution_report({"truth": {}, "pred": {}, "baseline": {}}, None, "w68", 8) == {}
