"""Regressor predictions for any data set.

    python -m lib.predict --checkpoint artifacts/<run>/checkpoints/best.pt --input DATA --out FILE.root
        [--tree NAME] [--npho-branch NAME] [--time-branch NAME]

DATA is a file, directory, glob or list, read with the run's data settings (tree and branch
names, workers; lib.data.build.prediction_loader; --tree / --npho-branch / --time-branch
override them) and normalized with the normalization stored in the checkpoint. The output has
the same layout as the run's predictions/predictions_val.root: the conventional reconstruction
the input carries (energyReco, uvwRecoFI, ...) is passed through beside the predictions, and
truth columns are NaN for tasks whose truth branches the input lacks and for real data (files
without MC truth). Bad input ends with a one-line message and exit code 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from lib.config import ConfigError, RegressorConfig, load_resolved
from lib.data.build import prediction_loader
from lib.data.files import DataError, for_flags
from lib.engine import CheckpointError, evaluation_weights
from lib.evaluation.inference import collect_predictions, quoted_metrics
from lib.evaluation.prediction_files import PredictionFileError, write_regression_predictions
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from lib.normalization import describe
from lib.recipes.finetune import build_regressor, passthrough_columns
from lib.tasks import by_output

log = logging.getLogger(__name__)

DATA_FLAGS = {"tree": "--tree", "npho": "--npho-branch", "time": "--time-branch"}
"""The command-line flags of the data settings that error messages name."""


def predict(checkpoint: Path, inputs: Sequence[str], out: Path, batch_size: int, device: str,
            data: dict[str, str] | None = None) -> dict[str, float]:
    """Write predictions of the regressor in `checkpoint` for `inputs` to `out`, with the run's data
    settings updated by `data` (e.g. {"tree_name": "rec"}); returns the metrics where truth exists."""
    config, weights = evaluation_weights(checkpoint)
    if config.get("tasks") is None:
        raise CheckpointError(f"{checkpoint} is not a regressor checkpoint (no tasks in its config); "
                              "lib.predict runs checkpoints of lib.train_regressor")
    cfg = load_resolved(config, RegressorConfig)
    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update=data or {})})
    model = build_regressor(cfg).to(device)
    model.load_state_dict(weights)
    loader = prediction_loader(cfg, inputs, batch_size)
    result = collect_predictions(model, loader, torch.device(device))
    tasks = dict(model.tasks.items())
    write_regression_predictions(
        out, run=result["run"], event=result["event"], truth=by_output(tasks, result["truth"]),
        pred=by_output(tasks, result["pred"]), sigma=by_output(tasks, result["sigma"]) or None,
        passthrough=passthrough_columns(result, cfg),
        metadata={"tasks": list(tasks), "normalization": describe(cfg.normalization),
                  "checkpoint": str(checkpoint), "split": ",".join(map(str, inputs)),
                  "fiducial": cfg.evaluation.fiducial},
    )
    metrics = quoted_metrics(tasks, result, cfg.evaluation.fiducial)["regressor"]
    log.info("wrote predictions of %d events to %s", len(result["run"]), out)
    for key, value in metrics.items():
        log.info("%-16s %.5g", key, value)
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    """Command line of `python -m lib.predict`; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="regressor checkpoint (best.pt / last.pt)")
    parser.add_argument("--input", required=True, nargs="+", help="data file(s), directory, or glob")
    parser.add_argument("--out", required=True, type=Path, help="output ROOT file")
    parser.add_argument("--batch_size", type=int, default=256, help="events per forward pass")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tree", dest="tree_name", help="TTree / RNTuple name (default: the run's data.tree_name)")
    parser.add_argument("--npho-branch", dest="npho_branch", help="npho branch (default: the run's)")
    parser.add_argument("--time-branch", dest="time_branch", help="time branch (default: the run's)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = {key: getattr(args, key) for key in ("tree_name", "npho_branch", "time_branch") if getattr(args, key)}
    try:
        predict(args.checkpoint, args.input, args.out, args.batch_size, args.device, data)
    except (CheckpointError, DataError, ConfigError, PredictionFileError) as exc:
        log.error("%s", for_flags(str(exc), DATA_FLAGS))
        return USAGE_ERROR_EXIT_CODE
    return 0


if __name__ == "__main__":
    sys.exit(main())
