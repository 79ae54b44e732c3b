#!/usr/bin/env python
"""Per-face display of one event's npho and time, optionally with an MAE prediction (mask, prediction, error).

    python macros/event_display.py --input data/shard.root --event 3 [--mae-predictions mae_pred.root] [--out ev.png]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib.config.schema import DataConfig  # noqa: E402
from lib.plots import mae_entry, plot_event_display, read_event  # noqa: E402
from lib.evaluation.prediction_files import read_predictions  # noqa: E402

log = logging.getLogger("event_display")
_DATA_FLAGS = {"tree": "tree_name", "npho_branch": "npho_branch", "time_branch": "time_branch"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="ROOT or npz shard with raw npho and time")
    parser.add_argument("--event", required=True, type=int, help="entry number in the input file")
    parser.add_argument("--mae-predictions", type=Path, help="MAE prediction ROOT file (matched on run/event)")
    parser.add_argument("--out", type=Path, help="PNG path (default: event_<input stem>_<EVENT>.png here)")
    for flag in _DATA_FLAGS:
        parser.add_argument(f"--{flag.replace('_', '-')}", help=f"default: data.{_DATA_FLAGS[flag]} of the config schema")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    data = DataConfig(**{key: getattr(args, flag) for flag, key in _DATA_FLAGS.items() if getattr(args, flag)})
    out = args.out or Path(f"event_{args.input.stem}_{args.event}.png")
    try:
        event = read_event(args.input, args.event, data)
        mae = metadata = None
        if args.mae_predictions:
            arrays, metadata = read_predictions(args.mae_predictions)
            if metadata.get("kind") != "mae":
                raise ValueError(f"{args.mae_predictions} is not an MAE prediction file (kind {metadata.get('kind')!r})")
            entry = mae_entry(arrays, event, args.event, str(args.mae_predictions))
            mae = {name: values[entry] for name, values in arrays.items()}
        plot_event_display(event, out, mae, metadata)
    except (ValueError, OSError) as err:
        log.error("%s", err)
        return 1
    log.info("wrote %s", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
