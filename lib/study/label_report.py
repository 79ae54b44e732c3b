"""Report of a finished label-efficiency study: resolution vs number of labelled events per mode.

Reads each point's metrics.json (the final evaluation on the validation events: "regressor", and the
classical baseline calibrated on the same N events: "baseline") and writes into <save_dir>/<study>/:

- points.csv: one row per fine-tune (mode, N, seed, every regressor and baseline metric);
- labels.csv: per mode and N the mean, standard deviation (over seeds), min and max of each headline
  resolution, the classical baseline as mode "classical";
- labels.md: one table per headline resolution, with the gain of pretrained and frozen over scratch;
- labels.png: resolution vs N, one panel per headline resolution, seed spread as error bars.

MLflow gets a parent run (tags study, study_role=parent) holding the tables, the plot and the mean
resolutions per mode (metric <mode>/<resolution>, step = N); every fine-tune becomes its child
(tag mlflow.parentRunId).
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib.io.atomic import atomic_write_text
from lib.io.run_files import MLFLOW_RUN_ID_NAME
from lib.study.label_plan import MODES, TAG_STUDY, StudyPoint
from lib.study.run_records import METRICS_NAME
from lib.study.tables import cell, markdown_table, write_csv

log = logging.getLogger(__name__)

CLASSICAL = "classical"
HEADLINES = (
    ("E_rel_w68_pct", "energy: 68 % half-width of (E_pred - E)/E (%)", 1.0),
    ("dist3d_68", "position: 68 % quantile of the 3-D distance (cm)", 1.0),
    ("t_w68", "timing: 68 % half-width (ps)", 1e12),
    ("opening_68_deg", "angle: 68 % quantile of the opening angle (deg)", 1.0),
)
"""(metrics.json key, label, scale to the label's unit) of each headline resolution (smaller is better)."""
ROLE_TAG, PARENT_ROLE, PARENT_RUN_ID_TAG = "study_role", "parent", "mlflow.parentRunId"


def point_rows(points: Sequence[StudyPoint], plans: Sequence[Any]) -> list[dict[str, Any]]:
    """One row per finished point: mode, events, seed, run and its metrics (baseline ones as classical:<key>)."""
    rows = []
    for point, plan in zip(points, plans):
        path = plan.layout.run_dir / METRICS_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: point {point.run_name} finished without a final evaluation "
                                    "(does the config set data.val_path?)")
        metrics = json.loads(path.read_text(encoding="utf-8"))
        row = {"mode": point.mode, "events": point.events, "seed": point.seed_index, "run": point.run_name}
        row.update(metrics.get("regressor", {}))
        row.update({f"{CLASSICAL}:{key}": value for key, value in metrics.get("baseline", {}).items()})
        rows.append(row)
    return rows


def _stats(values: list[float]) -> dict[str, float]:
    data = np.asarray(values, dtype=float)
    return {"mean": float(data.mean()), "std": float(data.std(ddof=1)) if len(data) > 1 else 0.0,
            "min": float(data.min()), "max": float(data.max()), "n": len(data)}


def aggregate(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (mode, N), modes in MODES order then classical: {mode, events, seeds, <key>_mean/_std/_min/_max}
    for every headline key present (scaled to the label's unit); classical over its distinct values."""
    keys = [(key, scale) for key, _, scale in HEADLINES if any(key in row for row in rows)]
    groups: dict[tuple[str, int], dict[str, list[float]]] = {}
    for row in rows:
        for mode, prefix in ((row["mode"], ""), (CLASSICAL, f"{CLASSICAL}:")):
            group = groups.setdefault((mode, row["events"]), {})
            for key, scale in keys:
                value = row.get(prefix + key)
                if value is None or not math.isfinite(value):
                    continue
                series = group.setdefault(key, [])
                # the baseline is calibrated on the same N events in every point: each value once (up to rounding)
                if mode != CLASSICAL or not any(math.isclose(value * scale, seen, rel_tol=1e-9) for seen in series):
                    series.append(value * scale)
    order = {mode: index for index, mode in enumerate((*MODES, CLASSICAL))}
    table = []
    for (mode, events), values in sorted(groups.items(), key=lambda item: (order[item[0][0]], item[0][1])):
        record: dict[str, Any] = {"mode": mode, "events": events}
        for key, series in values.items():
            stats = _stats(series)
            record["seeds"] = stats.pop("n")
            record.update({f"{key}_{name}": value for name, value in stats.items()})
        table.append(record)
    return table


def _find(table: Sequence[dict[str, Any]], mode: str, events: int) -> dict[str, Any] | None:
    return next((row for row in table if row["mode"] == mode and row["events"] == events), None)


def gain(table: Sequence[dict[str, Any]], mode: str, events: int, key: str) -> tuple[float, float] | None:
    """(gain in % of scratch's resolution, difference in standard errors) of `mode` over scratch at N, or None.
    Positive: `mode` is better (smaller) than scratch."""
    this, scratch = _find(table, mode, events), _find(table, "scratch", events)
    if this is None or scratch is None or f"{key}_mean" not in this or f"{key}_mean" not in scratch:
        return None
    difference = scratch[f"{key}_mean"] - this[f"{key}_mean"]
    error = math.sqrt(this[f"{key}_std"] ** 2 / this["seeds"] + scratch[f"{key}_std"] ** 2 / scratch["seeds"])
    return 100.0 * difference / scratch[f"{key}_mean"], (difference / error if error > 0 else math.nan)


def markdown_report(name: str, table: Sequence[dict[str, Any]], context: dict[str, Any]) -> str:
    """labels.md: the study's settings, then one table per headline resolution (mean +- std over seeds)."""
    lines = [f"# Label-efficiency study {name}", ""]
    lines += [f"- {key}: {value}" for key, value in context.items()]
    modes = [mode for mode in (*MODES, CLASSICAL) if any(row["mode"] == mode for row in table)]
    compared = [mode for mode in ("pretrained", "frozen") if mode in modes and "scratch" in modes]
    events = sorted({row["events"] for row in table})
    for key, label, _ in HEADLINES:
        if not any(f"{key}_mean" in row for row in table):
            continue
        rows = []
        for n in events:
            cells = []
            for mode in modes:
                row = _find(table, mode, n)
                cells.append("-" if row is None or f"{key}_mean" not in row else
                             f"{cell(row[f'{key}_mean'])} ± {cell(row[f'{key}_std'], 2)}")
            for mode in compared:
                result = gain(table, mode, n, key)
                cells.append("-" if result is None else f"{result[0]:+.1f} % ({cell(result[1], 2)} σ)")
            rows.append([n, *cells])
        header = ["N labelled", *modes, *(f"gain {mode} vs scratch" for mode in compared)]
        lines += ["", f"## {label}", "", markdown_table(rows, header)]
    lines += ["", "mean ± standard deviation over seeds; gain: (scratch - mode) / scratch, positive = better than "
              "scratch, in brackets the difference in standard errors of the two means."]
    return "\n".join(lines) + "\n"


def plot_report(path: Path, table: Sequence[dict[str, Any]], rows: Sequence[dict[str, Any]]) -> Path:
    """labels.png: one panel per headline resolution (two per row), mean +- std vs N per mode, each seed as a
    faint dot."""
    from lib.plots.style import figure

    panels = [(key, label, scale) for key, label, scale in HEADLINES if any(f"{key}_mean" in row for row in table)]
    saved: list[Path] = []
    ncols = min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    with figure(path, saved, nrows=nrows, ncols=ncols, squeeze=False, figsize=(6.5 * ncols, 4.8 * nrows)) as (fig, axes):
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (key, label, scale) in zip(axes.flat, panels):
            for index, mode in enumerate((*MODES, CLASSICAL)):
                series = [row for row in table if row["mode"] == mode and f"{key}_mean" in row]
                if not series:
                    continue
                style = {"linestyle": "--", "color": "grey"} if mode == CLASSICAL else {"color": f"C{index}"}
                ax.errorbar([row["events"] for row in series], [row[f"{key}_mean"] for row in series],
                            yerr=[row[f"{key}_std"] for row in series], marker="o", capsize=3, label=mode, **style)
                seeds = [(row["events"], row[key] * scale) for row in rows if row["mode"] == mode and key in row]
                if seeds:
                    ax.scatter(*zip(*seeds), s=8, alpha=0.35, color=style["color"])
            ax.set_xscale("log")
            ax.set_xlabel("labelled events N")
            ax.set_ylabel(label, fontsize=11)
            ax.legend(fontsize=10)
    return saved[0]


def write_label_report(points: Sequence[StudyPoint], plans: Sequence[Any], encoder: str | None,
                       planned: int | None = None) -> list[Path]:
    """Write points.csv, labels.csv, labels.md and labels.png into <save_dir>/<study>/ and the MLflow parent run;
    returns the files written. `planned`: the study's number of points when `points` are only the finished ones
    (a partial report: said in labels.md, no MLflow parent run)."""
    cfg = plans[0].cfg
    name = cfg.mlflow.tags[TAG_STUDY]
    out = plans[0].layout.run_dir.parent / name
    rows = point_rows(points, plans)
    table = aggregate(rows)
    metric_keys = sorted({key for row in rows for key in row} - {"mode", "events", "seed", "run"})
    context = {"MAE encoder": encoder or "-", "config": plans[0].config_file,
               "optimizer steps per point": _steps(plans[0]), "seeds": max(point.seed_index for point in points) + 1,
               "validation events": rows and _validation_events(plans[0])}
    if planned is not None:
        context["partial report"] = f"{len(points)} of {planned} points finished"
    outputs = [write_csv(out / "points.csv", rows, ["mode", "events", "seed", "run", *metric_keys])]
    columns = list(dict.fromkeys(key for row in table for key in row))
    outputs.append(write_csv(out / "labels.csv", table, columns))
    outputs.append(atomic_write_text(out / "labels.md", markdown_report(name, table, context)))
    outputs.append(plot_report(out / "labels.png", table, rows))
    if cfg.mlflow.enabled and planned is None:
        log_parent_run(cfg, name, plans, table, outputs, context)
    return outputs


def _steps(plan: Any) -> int:
    return plan.cfg.training.epochs * plan.cfg.data.steps_per_epoch


def _validation_events(plan: Any) -> int | str:
    metrics = json.loads((plan.layout.run_dir / METRICS_NAME).read_text(encoding="utf-8"))
    return metrics.get("events", {}).get("all", "-")


def log_parent_run(cfg: Any, name: str, plans: Sequence[Any], table: Sequence[dict[str, Any]],
                   outputs: Sequence[Path], context: dict[str, Any]) -> str:
    """Create (or reuse) the study's MLflow parent run, log the tables, plot and mean resolutions, and make every
    point's MLflow run its child; returns the parent's run id."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.resolve_tracking_uri(cfg.checkpoint.save_dir))
    experiment = client.get_experiment_by_name(cfg.mlflow.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(cfg.mlflow.experiment)
    query = f"tags.{TAG_STUDY} = '{name}' and tags.{ROLE_TAG} = '{PARENT_ROLE}'"
    found = client.search_runs([experiment_id], filter_string=query, max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(
        experiment_id, run_name=name, tags={TAG_STUDY: name, ROLE_TAG: PARENT_ROLE}).info.run_id
    if not found:
        for key, value in context.items():
            client.log_param(run_id, key.replace(" ", "_"), str(value))
    logged = {key: {m.step for m in client.get_metric_history(run_id, key)}
              for key in client.get_run(run_id).data.metrics}
    metrics = [Metric(f"{row['mode']}/{key[:-5]}", row[key], 0, row["events"]) for row in table for key in row
               if key.endswith("_mean") and row["events"] not in logged.get(f"{row['mode']}/{key[:-5]}", ())]
    if metrics:
        client.log_batch(run_id, metrics=metrics)
    for plan in plans:
        child = plan.layout.run_dir / MLFLOW_RUN_ID_NAME
        if child.is_file():
            client.set_tag(child.read_text(encoding="utf-8").strip(), PARENT_RUN_ID_TAG, run_id)
    for path in outputs:
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, "FINISHED")
    log.info("MLflow parent run %s of study %r, %d children", run_id, name, len(plans))
    return run_id
