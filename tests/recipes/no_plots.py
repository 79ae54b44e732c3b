"""Run a training entry point without drawing plots (seconds per run; the e2e tests that check plots keep them):

    torchrun ... tests/recipes/no_plots.py lib.train_regressor ARGS
"""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script: make `lib` importable

import lib.plots  # noqa: E402

if __name__ == "__main__":
    lib.plots.plot_learning_curves = lambda *args, **kwargs: []
    lib.plots.make_regression_plots = lambda *args, **kwargs: []
    lib.plots.plot_energy_resolution = lambda *args, **kwargs: []
    lib.plots.plot_worst_events = lambda *args, **kwargs: []
    sys.exit(importlib.import_module(sys.argv[1]).main(sys.argv[2:]))
