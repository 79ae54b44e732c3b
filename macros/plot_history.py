#!/usr/bin/env python
"""Learning curves of a run, from its training_history.json or its MLflow run.

    python macros/plot_history.py --history artifacts/<run>/training_history.json [--out DIR]
    python macros/plot_history.py --mlflow-run RUN_ID [--tracking-uri URI] [--out DIR]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config.schema import CheckpointConfig, MLflowConfig  # noqa: E402
from lib.plots import history_from_mlflow, load_history, plot_learning_curves  # noqa: E402

log = logging.getLogger("plot_history")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--history", type=Path, help="a run's training_history.json")
    source.add_argument("--mlflow-run", metavar="RUN_ID", help="MLflow run id")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: as training resolves it)")
    parser.add_argument("--out", type=Path, help="plot folder (default: plots/ next to the history file, "
                                                  "./plots_<RUN_ID> for MLflow)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.history:
            history, out = load_history(args.history), args.out or args.history.parent / "plots"
        else:
            uri = MLflowConfig(tracking_uri=args.tracking_uri).resolve_tracking_uri(CheckpointConfig().save_dir)
            history, out = history_from_mlflow(args.mlflow_run, uri), args.out or Path(f"plots_{args.mlflow_run}")
        saved = plot_learning_curves(history, out)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    log.info("wrote %d plots to %s", len(saved), out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
