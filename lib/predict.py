"""Regressor predictions for any data set, from a checkpoint or an exported ONNX model.

    python -m lib.predict --checkpoint artifacts/<run>/checkpoints/best.pt --input DATA... --out FILE.root
    python -m lib.predict --checkpoint MODEL --input DATA... --out-dir DIR [--no-summary] [--force]
    python -m lib.predict --checkpoint artifacts/<run>/exported/regressor_best.onnx --format onnx ...
        [--tree NAME] [--npho-branch NAME] [--time-branch NAME]

DATA is a file, directory, glob or list file (.txt / .list: one path per line), or several. With
--out every event goes into one file; with --out-dir each input file gets its own prediction file
<input stem>_pred.root (same events in the same order), and a record in DIR/records/ (done or
failed, events, error); inputs whose prediction by the same model is complete are skipped, an
input that fails (missing, unreadable) is recorded and the others go on, and at the end
DIR/manifest.json and DIR/summary.json (events, skipped, failures, resolutions where truth exists)
are written (--no-summary: left to the merge step of a prediction array, which then reports the
failures). Outputs of another model in DIR are refused unless --force.

The checkpoint is read with its run's data settings (tree and branch names; --tree, --npho-branch,
--time-branch override them) and normalization; an ONNX export (--format onnx, what
lib.export writes) is run by onnxruntime on the raw arrays, with the schema's default data settings.
Prediction files have the layout of the run's predictions/predictions_val.root: the conventional
reconstruction the input carries (energyReco, uvwRecoFI, ...) is passed through beside the
predictions, and truth columns are NaN for tasks whose truth branches the input lacks and for real
data. Bad input ends with a one-line message and exit code 2; failed inputs of --out-dir with 1.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from lib.config import ConfigError, NormalizationConfig, RegressorConfig, load_resolved
from lib.data.branches import reconstruction_branches
from lib.data.build import prediction_loader
from lib.data.files import SUFFIXES, DataError, expand_inputs, for_flags, has_glob
from lib.data.stream import RAW_INPUTS
from lib.engine import CheckpointError, evaluation_weights
from lib.evaluation.inference import FIDUCIAL_POSITION, PredictionCollector, quoted_metrics
from lib.evaluation.prediction_files import PredictionFileError, write_regression_predictions
from lib.evaluation.prediction_jobs import summarize
from lib.evaluation.prediction_model import CheckpointModel, ExportedFileModel, PredictionModel, PredictionModelError
from lib.io.checksum import file_sha256
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from lib.io.prediction_records import (
    DONE, FAILED, InputRecord, completed_inputs, output_names, write_record,
)
from lib.recipes.finetune import build_regressor, passthrough_columns
from lib.tasks import by_output

log = logging.getLogger(__name__)

DATA_FLAGS = {"tree": "--tree", "npho": "--npho-branch", "time": "--time-branch"}
"""The command-line flags of the data settings that error messages name."""
FORMATS = ("checkpoint", "onnx", "torchscript")


def load_model(path: Path, fmt: str, device: str, data: dict[str, str] | None = None
               ) -> tuple[PredictionModel, RegressorConfig]:
    """The model in `path` (FORMATS) and the config whose data settings, updated by `data`, read the inputs."""
    if not path.is_file():
        raise PredictionModelError(f"model file {path} does not exist; give a checkpoint (.pt) or, with "
                                   "--format onnx|torchscript, a file written by python -m lib.export")
    if fmt != "checkpoint":
        model = ExportedFileModel(path)
        norm = model.description["normalization"]
        try:
            cfg = RegressorConfig(normalization=NormalizationConfig(**norm) if norm else NormalizationConfig())
        except ValueError as err:  # pydantic's ValidationError
            raise PredictionModelError(f"{path}: the normalization in its metadata is not one lib.normalization "
                                       f"reads ({err.errors()[0]['msg']}); re-export the model") from err
    else:
        config, weights = evaluation_weights(path)
        if config.get("tasks") is None:
            raise CheckpointError(f"{path} is not a regressor checkpoint (no tasks in its config); "
                                  "lib.predict runs checkpoints of lib.train_regressor")
        cfg = load_resolved(config, RegressorConfig)
        regressor = build_regressor(cfg)
        regressor.load_state_dict(weights)
        model = CheckpointModel(regressor, cfg.normalization, device, path)
    return model, cfg.model_copy(update={"data": cfg.data.model_copy(update=data or {})})


def collect(model: PredictionModel, loader: Any) -> dict[str, Any]:
    """Predictions of `model` for every event of `loader` in file order (PredictionCollector.result's layout),
    keeping the input's reconstruction branches and the fiducial position."""
    keep = (*reconstruction_branches(loader.truth_branches), FIDUCIAL_POSITION)
    collector = PredictionCollector(model.tasks, keep=keep)
    loader.set_epoch(0)
    for batch in loader:
        pred, sigma = model.by_task(model(*(batch[name].numpy() for name in RAW_INPUTS)))
        collector.add_predictions(pred, sigma, batch)
    return collector.result()


def write_predictions(path: Path, model: PredictionModel, cfg: RegressorConfig, result: dict[str, Any],
                      split: str, sha256: str) -> Path:
    """Write `result` as a regression prediction file (lib.evaluation.prediction_files) at `path`."""
    tasks = model.tasks
    return write_regression_predictions(
        path, run=result["run"], event=result["event"], truth=by_output(tasks, result["truth"]),
        pred=by_output(tasks, result["pred"]), sigma=by_output(tasks, result["sigma"]) or None,
        passthrough=passthrough_columns(result, cfg),
        metadata={"tasks": list(tasks), "normalization": model.description["normalization"],
                  "checkpoint": model.description["path"], "model_format": model.description["format"],
                  "model_sha256": sha256, "split": split, "fiducial": cfg.evaluation.fiducial},
    )


def predict(model: PredictionModel, cfg: RegressorConfig, inputs: Sequence[str], out: Path,
            batch_size: int) -> dict[str, float]:
    """Write the predictions of `model` for all of `inputs` into one file `out`; returns the metrics where
    truth exists."""
    result = collect(model, prediction_loader(cfg, inputs, batch_size, extras=RAW_INPUTS))
    write_predictions(out, model, cfg, result, ",".join(map(str, inputs)), file_sha256(model.description["path"]))
    metrics = quoted_metrics(model.tasks, result, cfg.evaluation.fiducial)["regressor"]
    log.info("wrote predictions of %d events to %s", len(result["run"]), out)
    for key, value in metrics.items():
        log.info("%-16s %.5g", key, value)
    return metrics


def _input_files(items: Sequence[str]) -> list[str]:
    """The files of every input item, in order; a data file that does not exist (say, one deleted since a
    job was submitted for it) stays in the list, to get a failure record of its own."""
    files: list[str] = []
    for item in items:
        path = Path(item)
        if path.suffix in SUFFIXES and not path.exists() and not has_glob(item):
            files.append(str(path.absolute()))
        else:
            files += [str(found) for found in expand_inputs(item, config_key="--input")]
    return list(dict.fromkeys(files))


def _predict_one(model: PredictionModel, cfg: RegressorConfig, path: str, out_dir: Path, output: str,
                 batch_size: int, sha256: str) -> InputRecord:
    """Predict one input file into out_dir/output; a record of what happened (failures included)."""
    start = time.monotonic()
    try:
        if not Path(path).is_file():
            raise DataError(f"file {path}: does not exist (moved or deleted after it was listed?)")
        result = collect(model, prediction_loader(cfg, [path], batch_size, extras=RAW_INPUTS))
        written = write_predictions(out_dir / output, model, cfg, result, path, sha256)
    except (DataError, PredictionFileError, OSError) as err:
        message = for_flags(str(err), DATA_FLAGS)
        log.error("%s: %s", path, message)
        return InputRecord(path, output, FAILED, error=message, model_sha256=sha256,
                           seconds=round(time.monotonic() - start, 3))
    return InputRecord(path, output, DONE, events=len(result["run"]), model_sha256=sha256,
                       output_bytes=written.stat().st_size, seconds=round(time.monotonic() - start, 3))


def predict_each(model: PredictionModel, cfg: RegressorConfig, items: Sequence[str], out_dir: Path,
                 batch_size: int, force: bool = False) -> tuple[dict[str, str], list[str]]:
    """One prediction file and one record per input file of `items` in `out_dir`, skipping inputs the same
    model predicted completely; returns ({input: output name}, the inputs skipped)."""
    sha256 = file_sha256(model.description["path"])
    outputs = output_names(_input_files(items))
    complete, other = completed_inputs(out_dir, outputs, sha256)
    if other and not force:
        raise PredictionFileError(f"{out_dir} holds predictions of another model for {len(other)} input(s) (e.g. "
                                  f"{other[0]}); write into another --out-dir, or pass --force to replace them")
    for path in complete:
        log.info("%s: predictions complete in %s, skipped", path, out_dir / outputs[path])
    for path, output in outputs.items():
        if path not in complete:
            record = _predict_one(model, cfg, path, out_dir, output, batch_size, sha256)
            write_record(out_dir, record)
            if record.status == DONE:
                log.info("%s: %d events -> %s (%.1f s)", path, record.events, out_dir / output, record.seconds)
    return outputs, complete


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m lib.predict`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", "--model", dest="checkpoint", required=True, type=Path,
                        help="regressor checkpoint (best.pt / last.pt), or with --format onnx an exported .onnx")
    parser.add_argument("--format", choices=FORMATS, default="checkpoint", help="what --checkpoint is")
    parser.add_argument("--input", required=True, nargs="+", help="data file(s), directory, glob or list file")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, help="one output ROOT file for all events")
    where.add_argument("--out-dir", type=Path, help="one output file per input file in this folder")
    parser.add_argument("--no-summary", action="store_true",
                        help="--out-dir: write no manifest / summary (the merge step of a prediction array does)")
    parser.add_argument("--force", action="store_true", help="--out-dir: replace predictions of another model")
    parser.add_argument("--batch_size", type=int, default=256, help="events per forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tree", dest="tree_name", help="TTree / RNTuple name (default: the run's data.tree_name)")
    parser.add_argument("--npho-branch", dest="npho_branch", help="npho branch (default: the run's)")
    parser.add_argument("--time-branch", dest="time_branch", help="time branch (default: the run's)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Load the model and predict as the arguments say; returns the exit code."""
    data = {key: getattr(args, key) for key in ("tree_name", "npho_branch", "time_branch") if getattr(args, key)}
    model, cfg = load_model(args.checkpoint, args.format, args.device, data)
    if args.out is not None:
        predict(model, cfg, args.input, args.out, args.batch_size)
        return 0
    outputs, skipped = predict_each(model, cfg, args.input, args.out_dir, args.batch_size, args.force)
    if args.no_summary:
        return 0
    summary = summarize(args.out_dir, outputs, skipped, model.description)
    return 1 if summary["failures"] else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `python -m lib.predict`; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except (CheckpointError, DataError, ConfigError, PredictionFileError, PredictionModelError) as exc:
        log.error("%s", for_flags(str(exc), DATA_FLAGS))
        return USAGE_ERROR_EXIT_CODE


if __name__ == "__main__":
    sys.exit(main())
