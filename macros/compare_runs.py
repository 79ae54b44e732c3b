#!/usr/bin/env python
"""Table of the final metrics of several runs (e.g. pretrained vs from scratch): one column per run.

    python macros/compare_runs.py artifacts/reg_pretrained artifacts/reg_scratch [--markdown]

Metrics come from <run>/metrics.json ({"regressor": {...}, "baseline": {...}}, shown as
"regressor/<metric>" rows) when present, else from the last record of training_history.json.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.io.run_files import HISTORY_NAME  # noqa: E402

log = logging.getLogger("compare_runs")
METRICS_NAME = "metrics.json"


def run_metrics(run_dir: Path) -> dict[str, float]:
    """Flat {metric: value} of one run directory."""
    metrics_file, history_file = run_dir / METRICS_NAME, run_dir / HISTORY_NAME
    if metrics_file.is_file():
        return _scalars(json.loads(metrics_file.read_text(encoding="utf-8")))
    if history_file.is_file():
        records = json.loads(history_file.read_text(encoding="utf-8"))
        if not records:
            raise ValueError(f"run {run_dir}: {HISTORY_NAME} holds no epochs yet")
        return dict(records[-1])
    raise FileNotFoundError(f"run {run_dir}: neither {METRICS_NAME} nor {HISTORY_NAME} found; is it a run directory?")


def _scalars(tree: dict, prefix: str = "") -> dict[str, float]:
    """The numbers of a nested metrics.json as {"section/key/...": value}; lists (e.g. per-bin points) and
    texts are left out, so a table row is always one number."""
    flat: dict[str, float] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_scalars(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = value
    return flat


def _cell(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def format_table(columns: dict[str, dict[str, float]], markdown: bool) -> str:
    """Rows = metric names (first-seen order), columns = runs; '-' where a run lacks a metric."""
    names = list(dict.fromkeys(name for metrics in columns.values() for name in metrics))
    rows = [["metric", *columns]] + [[name, *(_cell(m.get(name, "-")) for m in columns.values())] for name in names]
    if markdown:
        lines = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([lines[0], "|" + "---|" * len(rows[0]), *lines[1:]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run directories")
    parser.add_argument("--markdown", action="store_true", help="print a markdown table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        names = [run.name for run in args.runs]
        labels = names if len(set(names)) == len(names) else [str(run) for run in args.runs]
        columns = {label: run_metrics(run) for label, run in zip(labels, args.runs)}
    except (ValueError, OSError) as err:  # json.JSONDecodeError is a ValueError
        log.error("%s", err)
        return 1
    print(format_table(columns, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
