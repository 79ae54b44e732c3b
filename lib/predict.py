"""Regressor predictions for any data set.

    python -m lib.predict --checkpoint artifacts/<run>/checkpoints/best.pt --input DATA --out FILE.root

DATA is a file, directory, glob or list, read with the run's data settings (tree and branch
names, workers; lib.data.build.prediction_loader) and normalized with the normalization stored
in the checkpoint. The output has the
same layout as the run's predictions/predictions_val.root; truth columns are NaN for tasks
whose truth branches the input lacks.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Sequence

import torch

from lib.config import RegressorConfig, load_resolved
from lib.data.build import prediction_loader
from lib.data.files import DataError
from lib.engine import CheckpointError, evaluation_weights
from lib.evaluation.inference import collect_predictions
from lib.evaluation.prediction_files import write_regression_predictions
from lib.normalization import describe
from lib.recipes.finetune import build_regressor
from lib.tasks import by_output, resolution_metrics

log = logging.getLogger(__name__)


def predict(checkpoint: Path, inputs: Sequence[str], out: Path, batch_size: int, device: str) -> dict[str, float]:
    """Write predictions of the regressor in `checkpoint` for `inputs` to `out`; returns metrics where truth exists."""
    config, weights = evaluation_weights(checkpoint)
    if config.get("tasks") is None:
        raise CheckpointError(f"{checkpoint} is not a regressor checkpoint (no tasks in its config); "
                              "lib.predict runs checkpoints of lib.train_regressor")
    cfg = load_resolved(config, RegressorConfig)
    model = build_regressor(cfg).to(device)
    model.load_state_dict(weights)
    loader = prediction_loader(cfg, inputs, batch_size)
    result = collect_predictions(model, loader, torch.device(device))
    tasks = dict(model.tasks.items())
    write_regression_predictions(
        out, run=result["run"], event=result["event"], truth=by_output(tasks, result["truth"]),
        pred=by_output(tasks, result["pred"]), sigma=by_output(tasks, result["sigma"]) or None,
        metadata={"tasks": list(tasks), "normalization": describe(cfg.normalization),
                  "checkpoint": str(checkpoint), "split": ",".join(map(str, inputs))},
    )
    metrics = resolution_metrics(tasks, result["truth"], result["pred"])
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
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        predict(args.checkpoint, args.input, args.out, args.batch_size, args.device)
    except (CheckpointError, DataError) as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
