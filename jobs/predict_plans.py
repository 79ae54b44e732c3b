"""Prediction arrays: which input files still need predictions, and the tasks of one job array (torch-free).

A `PredictionPlan` holds the model (a checkpoint, or an ONNX export; its sha256), the prediction
directory (<model's run>/predictions/<TAG>, or OUT_DIR), every input file with its prediction file
(lib.io.prediction_records), those the same model predicted completely already (skipped) and the
groups of FILES_PER_TASK other files, one array task each. A task runs `python -m lib.predict
--out-dir DIR --no-summary` on its files; the merge job (afterok on the array) runs
`python -m lib.evaluation.prediction_jobs merge DIR`, which reads the plan from DIR/plan.json.
"""
from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.knobs import JobError, Knobs, PredictOptions
from jobs.run_paths import RunPaths
from jobs.time_limits import check_time_limit
from lib.config import ConfigError, RegressorConfig, SlurmConfig, load_resolved
from lib.data.files import DataError, expand_inputs, has_glob
from lib.io.checksum import file_sha256
from lib.io.prediction_records import completed_inputs, output_names
from lib.io.run_files import CONFIG_NAME

MODEL_FORMATS = ("checkpoint", "onnx")
PREDICTIONS_DIR = "predictions"
RUN_DIR_SEARCH_DEPTH = 3
"""How many folders above the model file are searched for its run's config.yaml (checkpoints/best.pt: 2)."""


@dataclass(frozen=True)
class PredictionPlan:
    """One submission of a prediction array."""

    model: Path
    model_format: str
    model_sha256: str
    out_dir: Path
    outputs: dict[str, str]
    """{input file: prediction file name} of every input, in input order."""
    skipped: tuple[str, ...]
    """Inputs predicted completely by this model before: no task gets them."""
    groups: tuple[tuple[str, ...], ...]
    """The input files of each array task."""
    slurm: SlurmConfig
    predict_flags: tuple[str, ...] = ()
    """Arguments every task passes on to lib.predict (data settings, batch size, --force)."""

    @property
    def layout(self) -> RunPaths:
        """logs/, jobs.json and submit.lock of the prediction directory."""
        return RunPaths(self.out_dir)

    @property
    def job_name(self) -> str:
        return f"predict_{self.out_dir.name}"

    def to_json(self) -> dict[str, Any]:
        """plan.json: the model and, per input, its output and task (None: skipped)."""
        task_of = {path: index for index, group in enumerate(self.groups) for path in group}
        return {
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "model": {"path": str(self.model), "format": self.model_format, "sha256": self.model_sha256},
            "inputs": [{"input": path, "output": output, "task": task_of.get(path)}
                       for path, output in self.outputs.items()],
            "tasks": len(self.groups),
        }

    def task_arguments(self, index: int, cpu: bool) -> list[str]:
        """`python` arguments of array task `index`: lib.predict on its files into the prediction directory
        (on the CPU with `cpu`, else on the GPU where there is one)."""
        return ["-m", "lib.predict", "--checkpoint", str(self.model), "--format", self.model_format,
                "--out-dir", str(self.out_dir), "--no-summary", *(("--device", "cpu") if cpu else ()),
                *self.predict_flags, "--input", *self.groups[index]]

    def merge_arguments(self) -> list[str]:
        """`python` arguments of the merge step."""
        return ["-m", "lib.evaluation.prediction_jobs", "merge", str(self.out_dir)]


def model_format(model: Path, given: str | None) -> str:
    """`given`, else "onnx" for a .onnx file and "checkpoint" for anything else."""
    return given or ("onnx" if model.suffix == ".onnx" else "checkpoint")


def run_dir_of(model: Path) -> Path | None:
    """The run directory the model file belongs to: the nearest folder above it holding a config.yaml."""
    return next((folder for folder in model.resolve().parents[:RUN_DIR_SEARCH_DEPTH]
                 if (folder / CONFIG_NAME).is_file()), None)


def default_tag(items: list[str], files: list[Path]) -> str:
    """The predictions' folder name for these inputs: a single list file's or data file's name without
    suffix, else the name of the deepest folder holding all the files."""
    first = Path(items[0])
    if len(items) == 1 and not has_glob(items[0]) and first.is_file():
        name = first.stem
    else:
        name = Path(os.path.commonpath([str(path.parent) for path in files])).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or PREDICTIONS_DIR


def _input_files(items: list[str]) -> list[Path]:
    try:
        return expand_inputs(items, config_key="the INPUT arguments")
    except DataError as err:
        raise JobError(f"nothing to predict: {err}") from None


def _slurm_settings(run_dir: Path | None, knobs: Knobs) -> SlurmConfig:
    """The slurm section of the model's run config (schema defaults without one), with the knobs applied."""
    slurm = SlurmConfig()
    if run_dir is not None:
        try:
            slurm = load_resolved(run_dir / CONFIG_NAME, RegressorConfig).slurm
        except ConfigError as err:
            raise JobError(f"cannot read the slurm settings of the model's run: {err}") from None
    given = {key.split(".", 1)[1]: value for key, value in knobs.config_values.items() if key.startswith("slurm.")}
    return slurm.model_copy(update=given)


def _out_dir(model: Path, run_dir: Path | None, options: PredictOptions, tag: str) -> Path:
    if options.out_dir is not None:
        return Path(options.out_dir).absolute()
    if run_dir is None:
        raise JobError(f"cannot tell which run {model} belongs to (no {CONFIG_NAME} in the {RUN_DIR_SEARCH_DEPTH} "
                       "folders above it), so not where its predictions go; set OUT_DIR=DIR (or --out-dir DIR)")
    return run_dir / PREDICTIONS_DIR / tag


def _check_writable(out_dir: Path) -> None:
    nearest = next(path for path in (out_dir, *out_dir.parents) if path.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK | os.X_OK):
        raise JobError(f"cannot write the predictions into {out_dir} ({nearest} is not a writable folder); set "
                       "OUT_DIR (or TAG) to a folder you can write to")


def plan_predictions(model: str, items: list[str], given_format: str | None, knobs: Knobs,
                     predict_flags: tuple[str, ...] = ()) -> PredictionPlan:
    """Check the model and the inputs and plan the array: the files still to predict, FILES_PER_TASK per task."""
    options: PredictOptions = knobs.options  # type: ignore[assignment]
    model_path = Path(model).absolute()
    if not model_path.is_file():
        raise JobError(f"model file {model} does not exist; give a regressor checkpoint (.pt) or an ONNX export")
    files = _input_files(items)
    run_dir = run_dir_of(model_path)
    out_dir = _out_dir(model_path, run_dir, options, options.tag or default_tag(items, files))
    _check_writable(out_dir)
    slurm = _slurm_settings(run_dir, knobs)
    check_time_limit(slurm.time, slurm.signal_delay_s, "the prediction array")
    try:
        outputs = output_names([str(path) for path in files])
    except ValueError as err:
        raise JobError(str(err)) from None
    sha256 = file_sha256(model_path)
    complete, other = completed_inputs(out_dir, outputs, sha256)
    if other and not options.force:
        raise JobError(f"{out_dir} holds predictions of another model for {len(other)} input file(s) (e.g. "
                       f"{other[0]}); set TAG or OUT_DIR for a new folder, or FORCE=1 to replace them")
    todo = [path for path in outputs if path not in complete]
    size = options.files_per_task
    groups = tuple(tuple(todo[start:start + size]) for start in range(0, len(todo), size))
    flags = (*predict_flags, *(("--force",) if options.force else ()))
    return PredictionPlan(model_path, model_format(model_path, given_format), sha256, out_dir, outputs,
                          tuple(complete), groups, slurm, flags)

