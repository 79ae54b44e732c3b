"""The merge step of a prediction array, and the manifest and summary of any prediction directory.

    python -m lib.evaluation.prediction_jobs merge OUT_DIR

reads OUT_DIR/plan.json (written by the job suite at submission: model, every input with its output
and array task, or none when it was complete already), combines the per-input records the tasks
wrote (lib.io.prediction_records) into OUT_DIR/manifest.json and writes OUT_DIR/summary.json:
events, files done / skipped / failed, the failures with their errors, and where the files hold
truth the resolutions over all of them (lib.tasks.resolution_metrics, over all events and inside
the fiducial volume). It exits 1 with a one-line message naming the failed inputs when there are
any. `python -m lib.predict --out-dir` writes the same two files at its end.
"""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lib.config import TaskConfig
from lib.evaluation.prediction_files import PredictionFileError, read_predictions
from lib.io.prediction_records import (
    DONE, FAILED, MANIFEST_NAME, MISSING, PLAN_NAME, SKIPPED, SUMMARY_NAME, read_json, read_record, write_json,
)
from lib.tasks import build_tasks, resolution_metrics, valid_rows

log = logging.getLogger(__name__)

FIDUCIAL_COLUMN = "in_fiducial"


def manifest_entries(out_dir: Path, outputs: Mapping[str, str], skipped: Sequence[str]) -> list[dict[str, Any]]:
    """One entry per input: input, output, status (done, skipped, failed, missing), events, error."""
    entries = []
    for path, output in outputs.items():
        record = read_record(out_dir, output)
        if record is None or record.input != path:
            status, events, error = MISSING, None, "no record: the input was never predicted"
        else:
            status = SKIPPED if path in skipped and record.status == DONE else record.status
            events, error = record.events, record.error
        entries.append({"input": path, "output": output, "status": status, "events": events, "error": error})
    return entries


def _task_columns(arrays: Mapping[str, np.ndarray], tasks: Mapping[str, Any], kind: str) -> dict[str, np.ndarray]:
    return {name: np.stack([arrays[f"{kind}_{o}"] for o in task.output_names], axis=1) for name, task in tasks.items()}


def resolutions(out_dir: Path, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Resolutions over every predicted event of `entries` ("all", and "fiducial" when every file has
    in_fiducial), or None when no event has valid truth (real data)."""
    files = [out_dir / entry["output"] for entry in entries if entry["status"] in (DONE, SKIPPED)]
    if not files:
        return None
    truth: dict[str, list[np.ndarray]] = {}
    pred: dict[str, list[np.ndarray]] = {}
    inside: list[np.ndarray] | None = []
    tasks: dict[str, Any] | None = None
    for path in files:
        arrays, metadata = read_predictions(path)
        if tasks is None:
            tasks = build_tasks({name: TaskConfig() for name in metadata["tasks"]})
        elif list(tasks) != list(metadata["tasks"]):
            raise PredictionFileError(f"{path} predicts the tasks {metadata['tasks']}, the other files {list(tasks)}")
        for name, values in _task_columns(arrays, tasks, "truth").items():
            truth.setdefault(name, []).append(values)
        for name, values in _task_columns(arrays, tasks, "pred").items():
            pred.setdefault(name, []).append(values)
        inside = None if inside is None or FIDUCIAL_COLUMN not in arrays else [*inside, arrays[FIDUCIAL_COLUMN]]
    truth_all = {name: np.concatenate(parts) for name, parts in truth.items()}
    pred_all = {name: np.concatenate(parts) for name, parts in pred.items()}
    if not any(valid_rows(values).any() for values in truth_all.values()):
        return None
    result = {"all": resolution_metrics(tasks, truth_all, pred_all)}
    if inside is not None:
        mask = np.concatenate(inside).astype(bool)
        rows = {name: values[mask] for name, values in truth_all.items()}
        result["fiducial"] = resolution_metrics(tasks, rows, {name: values[mask] for name, values in pred_all.items()})
    return result


def summarize(out_dir: str | Path, outputs: Mapping[str, str], skipped: Sequence[str],
              model: Mapping[str, Any]) -> dict[str, Any]:
    """Write out_dir/manifest.json and out_dir/summary.json for the inputs of `outputs` ({input: output
    name}; `skipped`: those complete before this run) predicted by `model`; returns the summary."""
    out_dir = Path(out_dir)
    entries = manifest_entries(out_dir, outputs, skipped)
    write_json(out_dir / MANIFEST_NAME, {"model": dict(model), "inputs": entries})
    counts = {status: sum(entry["status"] == status for entry in entries) for status in (DONE, SKIPPED, FAILED,
                                                                                         MISSING)}
    failures = [{key: entry[key] for key in ("input", "status", "error")} for entry in entries
                if entry["status"] in (FAILED, MISSING)]
    summary = {
        "model": dict(model), "files": len(entries), **counts,
        "events": sum(entry["events"] or 0 for entry in entries if entry["status"] in (DONE, SKIPPED)),
        "failures": failures, "resolutions": resolutions(out_dir, entries),
    }
    write_json(out_dir / SUMMARY_NAME, summary)
    log.info("%d of %d input files predicted (%d skipped as complete), %d events; %d failed; summary: %s",
             counts[DONE] + counts[SKIPPED], len(entries), counts[SKIPPED], summary["events"], len(failures),
             out_dir / SUMMARY_NAME)
    if failures:
        named = "; ".join(f"{f['input']} ({f['error']})" for f in failures)
        log.error("%d of %d input files failed: %s; see %s", len(failures), len(entries), named,
                  out_dir / MANIFEST_NAME)
    return summary


def merge(out_dir: Path) -> int:
    """The merge step: manifest and summary of the submission in out_dir/plan.json; 1 when inputs failed."""
    plan = read_json(out_dir / PLAN_NAME)
    outputs = {entry["input"]: entry["output"] for entry in plan["inputs"]}
    skipped = [entry["input"] for entry in plan["inputs"] if entry["task"] is None]
    summary = summarize(out_dir, outputs, skipped, plan["model"])
    return 1 if summary["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: `merge OUT_DIR`; returns the exit code (2 when the directory has no plan)."""
    parser = argparse.ArgumentParser(prog="python -m lib.evaluation.prediction_jobs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["merge"])
    parser.add_argument("out_dir", type=Path, help="the prediction directory (holds plan.json)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not (args.out_dir / PLAN_NAME).is_file():
        log.error("%s has no %s; give the folder a prediction array was submitted into", args.out_dir, PLAN_NAME)
        return 2
    try:
        return merge(args.out_dir)
    except PredictionFileError as err:
        log.error("%s", err)
        return 2


if __name__ == "__main__":
    sys.exit(main())
