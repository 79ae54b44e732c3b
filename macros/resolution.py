#!/usr/bin/env python
"""Resolution plots and a metrics table (bias, RMS, 68 % half-width per output) of a regressor prediction file.

    python macros/resolution.py --predictions artifacts/<run>/predictions_val.root [--out DIR]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.plots import make_regression_plots  # noqa: E402
from lib.evaluation.prediction_files import read_predictions, regression_outputs  # noqa: E402
from lib.tasks.metrics import residual_summary  # noqa: E402

log = logging.getLogger("resolution")
_STATS = ("bias", "rms", "w68")


def metrics_table(arrays: dict, metadata: dict) -> str:
    """Aligned text table: one row per output with N, bias, RMS and w68 of its finite residuals."""
    units = metadata.get("units", {})
    rows = [("output", "unit", "N", *_STATS)]
    for output in regression_outputs(arrays, metadata):
        residuals = arrays[f"error_{output}"]
        residuals = residuals[np.isfinite(residuals)]
        summary = residual_summary(residuals, output)
        rows.append((output, units.get(output, ""), str(residuals.size),
                     *(f"{summary[f'{output}_{stat}']:.4g}" for stat in _STATS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.rjust(width) for cell, width in zip(row, widths)) for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--predictions", required=True, type=Path, help="regressor prediction ROOT file")
    parser.add_argument("--out", type=Path, help="plot folder (default: plots/ next to the predictions file)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        arrays, metadata = read_predictions(args.predictions)
        print(metrics_table(arrays, metadata))
        make_regression_plots(args.predictions, args.out or args.predictions.parent / "plots")
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
