"""Names and records of a prediction directory: the contract between lib.predict, which writes one
prediction file and one record per input file, the merge step (lib.evaluation.prediction_jobs) and
the job suite (jobs/predict_plans.py), which plans only what is missing. Torch-free.

    <out dir>/<input stem>_pred.root     predictions for one input file (lib.evaluation.prediction_files)
    <out dir>/records/<output>.json      what happened to that input: done or failed, events, error, model
    <out dir>/plan.json                  the latest submission (job suite): model, inputs, outputs, tasks
    <out dir>/manifest.json              every input of the submission -> output, events, status, error
    <out dir>/summary.json               events, skipped and failed files, resolutions over all files

An input's prediction is complete when its record says "done" by the same model (sha256 of the model
file) and its output file still has the recorded size; complete inputs are skipped, so a requeued or
re-submitted job predicts only what is missing. Every file here is written atomically.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.io.atomic import atomic_write_text
from lib.io.done_marker import job_id

OUTPUT_SUFFIX = "_pred.root"
RECORDS_DIR = "records"
PLAN_NAME = "plan.json"
MANIFEST_NAME = "manifest.json"
SUMMARY_NAME = "summary.json"
DONE, FAILED, SKIPPED, MISSING = "done", "failed", "skipped", "missing"
"""Statuses: DONE and FAILED in records; the manifest adds SKIPPED (complete before this submission) and
MISSING (no record: the input was never reached)."""


def output_name(input_path: str | os.PathLike) -> str:
    """The prediction file of an input file: its name without the suffix, then OUTPUT_SUFFIX."""
    return Path(input_path).stem + OUTPUT_SUFFIX


def output_names(inputs: list[str]) -> dict[str, str]:
    """{input: output name} of every input; ValueError when two inputs would write the same output."""
    names: dict[str, str] = {}
    owner: dict[str, str] = {}
    for path in inputs:
        name = output_name(path)
        if name in owner:
            raise ValueError(f"inputs {owner[name]} and {path} would both write {name}; predict them into "
                             "different output folders, or rename one of them")
        owner[name], names[path] = path, name
    return names


@dataclass(frozen=True)
class InputRecord:
    """What happened to one input file of a prediction directory."""

    input: str
    output: str
    """The prediction file's name in the directory."""
    status: str
    """DONE or FAILED."""
    events: int | None = None
    error: str | None = None
    model_sha256: str | None = None
    output_bytes: int | None = None
    seconds: float | None = None
    job: str = ""
    finished: str = ""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return dataclasses.asdict(self)


def record_path(out_dir: str | os.PathLike, output: str) -> Path:
    """Where the record of the input with prediction file `output` lives."""
    return Path(out_dir) / RECORDS_DIR / f"{output}.json"


def write_record(out_dir: str | os.PathLike, record: InputRecord) -> Path:
    """Write `record` atomically, stamped with this process's job id and the time (UTC)."""
    stamped = dataclasses.replace(record, job=job_id(),
                                  finished=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return atomic_write_text(record_path(out_dir, record.output), json.dumps(stamped.to_json(), indent=1))


def read_record(out_dir: str | os.PathLike, output: str) -> InputRecord | None:
    """The record of `output`, or None when there is none (or it cannot be read)."""
    path = record_path(out_dir, output)
    try:
        return InputRecord(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def done_record(out_dir: str | os.PathLike, input_path: str, output: str) -> InputRecord | None:
    """The record of a finished prediction of `input_path` whose output file is still as written, else None."""
    record = read_record(out_dir, output)
    if record is None or record.status != DONE or record.input != str(input_path):
        return None
    target = Path(out_dir) / output
    return record if target.is_file() and target.stat().st_size == record.output_bytes else None


def completed_inputs(out_dir: str | os.PathLike, outputs: dict[str, str], model_sha256: str) -> tuple[list, list]:
    """(inputs predicted completely by this model, inputs predicted completely by another model) of
    {input: output name}."""
    complete, other = [], []
    for path, name in outputs.items():
        record = done_record(out_dir, path, name)
        if record is not None:
            (complete if record.model_sha256 == model_sha256 else other).append(path)
    return complete, other


def write_json(path: str | os.PathLike, content: Any) -> Path:
    """Write `content` as indented JSON, atomically."""
    return atomic_write_text(path, json.dumps(content, indent=1))


def read_json(path: str | os.PathLike) -> Any:
    """The JSON content of `path`."""
    return json.loads(Path(path).read_text(encoding="utf-8"))
