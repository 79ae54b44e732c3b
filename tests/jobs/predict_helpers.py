"""Helpers of the prediction-array tests: a run directory holding the session's tiny regressor, and reading
what a prediction directory holds."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def model_in_run(parent: Path, checkpoint: Path) -> Path:
    """A copy of `checkpoint` in a run directory of its own (config.yaml beside checkpoints/): its path."""
    run_dir = parent / "runs" / "reg"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copyfile(checkpoint.parent.parent / "config.yaml", run_dir / "config.yaml")
    return Path(shutil.copyfile(checkpoint, run_dir / "checkpoints" / checkpoint.name))


def read(path: Path) -> Any:
    """The JSON content of `path`."""
    return json.loads(path.read_text())


def stamps(out_dir: Path) -> dict[str, int]:
    """{prediction file name: mtime_ns} of a prediction directory."""
    return {path.name: path.stat().st_mtime_ns for path in sorted(out_dir.glob("*_pred.root"))}


def planned_tasks(out_dir: Path) -> dict[str, int | None]:
    """{input file name: its array task (None: skipped)} of the latest plan.json."""
    return {Path(entry["input"]).name: entry["task"] for entry in read(out_dir / "plan.json")["inputs"]}
