"""Energy resolution vs energy, fitted with the calorimeter form sigma_E / E = a / sqrt(E) (+) b (+) c / E.

The relative residual (E_pred - E) / E is measured in equally populated bins of the true E (GeV) with the
chosen estimator (lib.evaluation.resolution_estimators, bootstrap errors) and fitted by weighted least squares
in quadrature: sqrt(a^2 / E + b^2 + c^2 / E^2) (a in sqrt(GeV): stochastic, b: constant, c in GeV: noise).
The fit's parameters are the squares a^2, b^2, c^2 >= 0; their errors come from the fit covariance (absolute
errors) and are quoted on a, b, c (see `_term_and_error`), with chi2 / ndof beside them.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.optimize import curve_fit

from lib.evaluation.resolution_estimators import width_with_error
from lib.tasks import valid_rows

log = logging.getLogger(__name__)

TERMS = ("a", "b", "c")


@dataclass(frozen=True)
class BinnedResolution:
    """sigma_E / E in bins of the true energy (GeV)."""

    energy: np.ndarray
    """Mean true energy of each bin."""
    width: np.ndarray
    error: np.ndarray
    counts: np.ndarray
    inverse_moments: np.ndarray
    """(bins, 2): mean of 1/E and of 1/E^2 over each bin's events: the fit compares each width with
    sqrt(a^2 <1/E> + b^2 + c^2 <1/E^2>), the width of the bin's mixture of Gaussians, so wide bins at low
    energy (where the resolution changes fast) do not bias a, b, c."""


@dataclass(frozen=True)
class ResolutionFit:
    """Fitted a (sqrt(GeV)), b, c (GeV) with their errors, and the fit quality."""

    a: float
    a_err: float
    b: float
    b_err: float
    c: float
    c_err: float
    chi2: float
    ndof: int

    def curve(self, energy: np.ndarray) -> np.ndarray:
        """sigma_E / E of the fitted form at `energy` (GeV)."""
        return relative_resolution(np.asarray(energy, dtype=np.float64), self.a, self.b, self.c)


def relative_resolution(energy: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    """a / sqrt(E) (+) b (+) c / E, summed in quadrature (E in GeV)."""
    return np.sqrt(a**2 / energy + b**2 + c**2 / energy**2)


def _bin_resolution(moments: np.ndarray, a2: float, b2: float, c2: float) -> np.ndarray:
    """The width of each bin's mixture, sqrt(a^2 <1/E> + b^2 + c^2 <1/E^2>), from the bins' inverse moments and
    the squared terms (the fit's parameters: at a term's bound 0 its derivative does not vanish, so its error
    stays meaningful)."""
    return np.sqrt(a2 * moments[:, 0] + b2 + c2 * moments[:, 1])


def _term_and_error(square: float, square_err: float) -> tuple[float, float]:
    """A term and its error from its fitted square: sqrt(s), and sqrt(s + ds) - sqrt(s), the linear propagation
    ds / (2 sqrt(s)) when the term is well measured and sqrt(ds), an upper 1-sigma reach, when it is at 0."""
    term = float(np.sqrt(max(square, 0.0)))
    return term, float(np.sqrt(max(square, 0.0) + square_err)) - term


def binned_relative_resolution(true_energy: np.ndarray, pred_energy: np.ndarray, estimator: str,
                               n_bins: int) -> BinnedResolution:
    """The width (`estimator`) of (pred - true) / true in up to `n_bins` equally populated bins of true energy;
    events with an invalid or non-positive truth or a non-finite prediction are left out."""
    true_energy, pred_energy = (np.asarray(a, dtype=np.float64).ravel() for a in (true_energy, pred_energy))
    keep = valid_rows(true_energy) & (true_energy > 0) & np.isfinite(pred_energy)
    if keep.sum() < 2:
        return BinnedResolution(*(np.zeros(0),) * 3, np.zeros(0, dtype=np.int64), np.zeros((0, 2)))
    true_energy, pred_energy = true_energy[keep], pred_energy[keep]
    relative = pred_energy / true_energy - 1.0
    edges = np.unique(np.quantile(true_energy, np.linspace(0.0, 1.0, n_bins + 1)))
    index = np.clip(np.searchsorted(edges, true_energy, side="right") - 1, 0, len(edges) - 2)
    bins = [in_bin for in_bin in (index == i for i in range(len(edges) - 1)) if in_bin.any()]
    widths = np.array([width_with_error(relative[in_bin], estimator, seed=i) for i, in_bin in enumerate(bins)])
    return BinnedResolution(np.array([true_energy[in_bin].mean() for in_bin in bins]), widths[:, 0], widths[:, 1],
                            np.array([in_bin.sum() for in_bin in bins], dtype=np.int64),
                            np.array([[np.mean(1 / true_energy[in_bin]), np.mean(true_energy[in_bin] ** -2.0)]
                                      for in_bin in bins]))


def fit_resolution(points: BinnedResolution) -> ResolutionFit | None:
    """Least-squares fit of `relative_resolution` to the binned widths; None with fewer than 4 usable bins."""
    usable = np.isfinite(points.width) & np.isfinite(points.error) & (points.error > 0)
    energy, width, error = points.energy[usable], points.width[usable], points.error[usable]
    moments = points.inverse_moments[usable]
    if usable.sum() < len(TERMS) + 1:
        log.warning("energy resolution fit skipped: %d usable bins, need >= %d", usable.sum(), len(TERMS) + 1)
        return None
    start = [float(np.median(width**2 * energy)), float(width.min()) ** 2, float(np.median(width * energy)) ** 2]
    try:
        squares, covariance = curve_fit(_bin_resolution, moments, width, p0=np.array(start) / 3, sigma=error,
                                        absolute_sigma=True, bounds=(0.0, np.inf))
    except (RuntimeError, ValueError) as err:
        log.warning("energy resolution fit failed: %s", err)
        return None
    square_errors = np.sqrt(np.clip(np.diag(covariance), 0.0, None))
    chi2 = float((((width - _bin_resolution(moments, *squares)) / error) ** 2).sum())
    (a, a_err), (b, b_err), (c, c_err) = (_term_and_error(*pair) for pair in zip(squares, square_errors))
    return ResolutionFit(a, a_err, b, b_err, c, c_err, chi2, int(usable.sum() - len(TERMS)))


def energy_resolution_fits(true_energy: np.ndarray, predictions: Mapping[str, np.ndarray],
                           estimator: str, n_bins: int) -> dict[str, tuple[BinnedResolution, ResolutionFit | None]]:
    """{source: (binned points, fit)} for each source's (N,) predicted energy (e.g. regressor, baseline)."""
    fits = {}
    for source, pred in predictions.items():
        points = binned_relative_resolution(true_energy, pred, estimator, n_bins)
        fits[source] = (points, fit_resolution(points))
    return fits


def fit_summary(points: BinnedResolution, fit: ResolutionFit | None) -> dict[str, Any]:
    """metrics.json form: the fitted terms with errors (or null) and the points they were fitted to."""
    return {"fit": None if fit is None else asdict(fit),
            "points": {"energy_GeV": points.energy.tolist(), "sigma_over_E": points.width.tolist(),
                       "error": points.error.tolist(), "events": points.counts.tolist()}}


Report = dict[str, dict[str, tuple[BinnedResolution, ResolutionFit | None]]]
"""{selection ("all", "fiducial"): {source ("regressor", "baseline"): (binned points, fit)}}."""


def energy_resolution_report(result: Mapping[str, Any], inside: np.ndarray | None, estimator: str,
                             n_bins: int) -> Report:
    """The energy-resolution fits of the regressor and (when it estimated energy) the classical baseline,
    over all events and inside the fiducial volume (`inside`, when known), from the predictions `result`
    (lib.evaluation.inference.PredictionCollector.result); {} without an energy task or its truth."""
    truth = result["truth"].get("energy")
    if truth is None or "energy" not in result["pred"]:
        return {}
    sources = {source: result[group]["energy"][:, 0] for source, group in (("regressor", "pred"),
                                                                          ("baseline", "baseline"))
               if "energy" in result[group]}
    selections = {"all": np.ones(len(truth), bool)}
    if inside is not None:
        selections["fiducial"] = inside
    return {selection: energy_resolution_fits(truth[rows, 0], {s: pred[rows] for s, pred in sources.items()},
                                              estimator, n_bins)
            for selection, rows in selections.items()}


def report_summary(report: Report, estimator: str) -> dict[str, Any]:
    """metrics.json section `energy_resolution` of a report (fit_summary per selection and source)."""
    summary: dict[str, Any] = {"form": "sigma_E/E = a/sqrt(E) (+) b (+) c/E, E in GeV", "estimator": estimator,
                               "units": {"a": "sqrt(GeV)", "b": "1", "c": "GeV"}}
    for selection, fits in report.items():
        summary[selection] = {source: fit_summary(points, fit) for source, (points, fit) in fits.items()}
    return summary


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The fitted terms of a report_summary as flat metrics, `energy_fit/<selection>_<source>_<term>`."""
    flat: dict[str, float] = {}
    for selection in ("all", "fiducial"):
        for source, entry in summary.get(selection, {}).items():
            if entry["fit"] is not None:
                flat.update({f"energy_fit/{selection}_{source}_{term}": entry["fit"][term]
                             for term in (*TERMS, *(t + "_err" for t in TERMS))})
    return flat
