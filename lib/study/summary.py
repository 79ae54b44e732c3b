"""`python -m lib.study summary`: the runs of a sweep or an experiment side by side.

    python -m lib.study summary --experiment NAME [--tracking-uri URI] [--sweep NAME] [--metric KEY] [--top K]
    python -m lib.study summary RUN_DIR_OR_FOLDER ... [--sweep NAME] [--metric KEY] [--top K] [--out DIR]

Writes into --out (default artifacts/summary_<sweep or experiment>):
- summary.csv: per run the config keys that differ between the runs, the final and best value of the
  ranking metric, train/loss and val/loss at the end and their gap (val - train: > 0 when the run
  overfits), the steps trained, and the final value of every other metric;
- summary.md: the same without the other metrics, runs ranked by the final value of --metric
  (smallest first unless --maximize; runs without it last);
- summary.png: learning curves of the top k runs (the metric, and train/val loss) against the global step.
"""
from __future__ import annotations

import argparse
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lib.config import CheckpointConfig, ConfigError, MLflowConfig
from lib.io.atomic import atomic_write_text
from lib.study.run_records import RunRecord, records_from_mlflow, records_from_run_dirs
from lib.study.tables import markdown_table, write_csv

log = logging.getLogger(__name__)

TRAIN_LOSS, VAL_LOSS = "train/loss", "val/loss"
HIDDEN_KEYS = ("checkpoint.run_name", "mlflow.tags.")
"""Config keys left out of the comparison: the run name (its own column) and the MLflow tags."""


def add_summary_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `summary`."""
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN_DIR",
                        help="run directories, or folders holding them (instead of --experiment)")
    parser.add_argument("--experiment", help="MLflow experiment to read (instead of run directories)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: as training resolves it)")
    parser.add_argument("--sweep", help="only the runs of this sweep (their mlflow.tags.sweep)")
    parser.add_argument("--metric", default=VAL_LOSS, help=f"metric to rank by (default {VAL_LOSS})")
    parser.add_argument("--maximize", action="store_true", help="larger values of --metric are better")
    parser.add_argument("--top", type=int, default=5, metavar="K", help="runs in the learning-curve plot (default 5)")
    parser.add_argument("--out", type=Path, help="output folder (default artifacts/summary_<sweep or experiment>)")


def differing_keys(records: Sequence[RunRecord]) -> list[str]:
    """Config keys whose value is not the same in every run (a key some runs lack counts as differing)."""
    keys = dict.fromkeys(key for record in records for key in record.config)
    return [key for key in keys if not key.startswith(HIDDEN_KEYS)
            and len({record.config.get(key) for record in records}) > 1]


def _series(record: RunRecord, key: str) -> list[tuple[int, float]]:
    return [(int(r.get("global_step", r.get("epoch", i + 1))), float(r[key]))
            for i, r in enumerate(record.history) if isinstance(r.get(key), (int, float))]


def run_row(record: RunRecord, metric: str, maximize: bool, keys: Sequence[str]) -> dict[str, Any]:
    """The summary row of one run (values as numbers; config values as text)."""
    series = _series(record, metric)
    train, val = record.final.get(TRAIN_LOSS), record.final.get(VAL_LOSS)
    steps = max((int(r["global_step"]) for r in record.history if "global_step" in r), default=None)
    if not series and record.final.get(metric) is not None:  # a final evaluation only (e.g. final/...)
        series = [(steps, record.final[metric])]
    best = (max if maximize else min)(series, key=lambda point: point[1]) if series else None
    row = {"run": record.name, **{key: record.config.get(key) for key in keys},
           f"final {metric}": record.final.get(metric), f"best {metric}": best and best[1],
           "best at step": best and best[0], TRAIN_LOSS: train, VAL_LOSS: val,
           "overfit gap": val - train if train is not None and val is not None else None,
           "steps": steps, "status": record.status, "source": record.source}
    return row


def ranked(rows: list[dict[str, Any]], metric: str, maximize: bool) -> list[dict[str, Any]]:
    """Rows by the final value of `metric`, best first; rows without it (or NaN) last; 'rank' added."""
    def order(row: dict[str, Any]) -> tuple[bool, float]:
        value = row[f"final {metric}"]
        missing = value is None or math.isnan(value)
        return missing, 0.0 if missing else (-value if maximize else value)

    result = sorted(rows, key=order)
    for rank, row in enumerate(result, 1):
        row["rank"] = rank
    return result


def plot_curves(path: Path, records: Sequence[RunRecord], metric: str) -> Path:
    """Learning curves of `records` against the global step: `metric` (when it has a history) and the losses."""
    from lib.plots.style import figure

    panels = [metric] if any(len(_series(record, metric)) > 1 for record in records) and metric != VAL_LOSS else []
    panels.append("losses")
    saved: list[Path] = []
    with figure(path, saved, ncols=len(panels), squeeze=False, figsize=(6.5 * len(panels), 4.8)) as (fig, axes):
        for ax, panel in zip(axes[0], panels):
            for index, record in enumerate(records):
                color = f"C{index % 10}"
                if panel == metric:
                    ax.plot(*zip(*_series(record, metric)), marker="o", markersize=3, color=color, label=record.name)
                    continue
                for key, style in ((VAL_LOSS, "-"), (TRAIN_LOSS, "--")):
                    points = _series(record, key)
                    if points:
                        ax.plot(*zip(*points), style, marker="o", markersize=3, color=color,
                                label=record.name if key == VAL_LOSS else None)
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(metric if panel == metric else f"{VAL_LOSS} (solid), {TRAIN_LOSS} (dashed)", fontsize=11)
            if panel == "losses" and all(v > 0 for r in records for k in (VAL_LOSS, TRAIN_LOSS) for _, v in _series(r, k)):
                ax.set_yscale("log")
            ax.legend(fontsize=9)
    return saved[0]


def _records(args: argparse.Namespace) -> tuple[list[RunRecord], str]:
    if bool(args.runs) == bool(args.experiment):
        raise ConfigError("give either run directories (or folders of them) or --experiment NAME, not both")
    if args.experiment:
        uri = MLflowConfig(tracking_uri=args.tracking_uri).resolve_tracking_uri(CheckpointConfig().save_dir)
        keys = list(dict.fromkeys([args.metric, TRAIN_LOSS, VAL_LOSS]))
        return records_from_mlflow(args.experiment, uri, args.sweep, keys), args.sweep or args.experiment
    return records_from_run_dirs(args.runs, args.sweep), args.sweep or "runs"


def run_summary(args: argparse.Namespace) -> list[Path]:
    """Read the runs, rank them, write summary.csv / .md / .png; returns the files written."""
    if args.top < 1:
        raise ConfigError(f"--top {args.top}: at least 1")
    records, name = _records(args)
    if not any(args.metric in record.final for record in records):
        known = sorted({key for record in records for key in record.final if "/" in key})
        raise ConfigError(f"no run has the metric {args.metric!r}; choose --metric among: {', '.join(known[:40])}")
    keys = differing_keys(records)
    rows = ranked([run_row(record, args.metric, args.maximize, keys) for record in records], args.metric,
                  args.maximize)
    out = args.out or Path(CheckpointConfig().save_dir) / f"summary_{name}"
    by_source = {record.source: record for record in records}
    others = sorted({key for record in records for key in record.final} - {args.metric, TRAIN_LOSS, VAL_LOSS})
    for row in rows:
        row.update({f"final {key}": by_source[row["source"]].final.get(key) for key in others})
    shown = ["rank", "run", *keys, f"final {args.metric}", f"best {args.metric}", "best at step", TRAIN_LOSS,
             VAL_LOSS, "overfit gap", "steps", "status"]
    outputs = [write_csv(out / "summary.csv", rows, [*shown, *(f"final {key}" for key in others), "source"])]
    title = f"# Summary of {'sweep' if args.sweep else 'experiment' if args.experiment else 'runs'} {name}\n\n"
    text = title + markdown_table([[row[column] for column in shown] for row in rows], shown) + "\n"
    outputs.append(atomic_write_text(out / "summary.md", text))
    top = [by_source[row["source"]] for row in rows[: args.top]]
    outputs.append(plot_curves(out / "summary.png", top, args.metric))
    return outputs
