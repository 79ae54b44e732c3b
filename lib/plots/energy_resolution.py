"""sigma_E / E vs the true energy with the fitted a / sqrt(E) (+) b (+) c / E, regressor beside the baseline."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lib.evaluation.resolution_fit import Report, ResolutionFit
from lib.plots.style import figure

_COLOURS = {"regressor": "tab:blue", "baseline": "tab:orange"}
_CURVE_POINTS = 200
_HEADROOM = 2.4


_TERM_UNITS = (("a", 100.0, "% sqrt(GeV)"), ("b", 100.0, "%"), ("c", 1000.0, "MeV"))
"""How the legend quotes each term: name, factor, unit."""


def _fit_label(source: str, fit: ResolutionFit | None) -> str:
    if fit is None:
        return f"{source} (no fit)"
    terms = [f"{name} = {getattr(fit, name) * factor:.2f} +- {getattr(fit, name + '_err') * factor:.2f} {unit}"
             for name, factor, unit in _TERM_UNITS]
    return "\n".join([f"{source} (chi2/ndof {fit.chi2:.1f}/{fit.ndof})", *terms])


def plot_energy_resolution(report: Report, estimator: str, out_dir: str | os.PathLike) -> list[Path]:
    """energy_resolution_fit.png: one panel per selection (all events, fiducial), the binned sigma_E / E
    (`estimator`) of each source with its fitted curve and the fitted terms (a in % sqrt(GeV), b in %, c in MeV)."""
    saved: list[Path] = []
    if not report:
        return saved
    with figure(Path(out_dir) / "energy_resolution_fit.png", saved, ncols=len(report), squeeze=False,
                figsize=(7 * len(report), 6)) as (fig, axes):
        for ax, (selection, fits) in zip(axes.flat, report.items()):
            for source, (points, fit) in fits.items():
                colour = _COLOURS.get(source, "k")
                ax.errorbar(points.energy, points.width, yerr=points.error, fmt="o", color=colour, markersize=4,
                            label=_fit_label(source, fit))
                if fit is not None and points.energy.size:
                    energy = np.linspace(points.energy.min(), points.energy.max(), _CURVE_POINTS)
                    ax.plot(energy, fit.curve(energy), color=colour)
            ax.set_title(f"{selection} events", fontsize="small")
            ax.set_xlabel("true E [GeV]")
            ax.set_ylabel(f"sigma_E / E ({estimator})")
            tops = [np.nanmax(points.width + points.error) for points, _ in fits.values() if points.width.size]
            if tops and np.isfinite(max(tops)):
                ax.set_ylim(0.0, _HEADROOM * max(tops))  # room above the points for the legend
            ax.legend(fontsize="x-small", loc="upper right")
    return saved
