"""`python -m lib.study {labels,summary} ...`: label-efficiency study and sweep summaries.

    python -m lib.study labels --config REG_CONFIG --mae ENCODER --events 250,1000,4000 [--seeds 3] [knob flags]
    python -m lib.study summary (--experiment NAME [--tracking-uri URI] | RUN_DIR ...) [--sweep NAME]
        [--metric KEY] [--top K] [--out DIR]

Bad input exits 2 with a one-line message, a failed training run 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from jobs.executors import RunFailedError
from jobs.knobs import JobError, add_knob_flags
from lib.config import ConfigError
from lib.study.labels import add_label_arguments, run_labels
from lib.study.summary import add_summary_arguments, run_summary

log = logging.getLogger("lib.study")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser with its two sub-commands."""
    parser = argparse.ArgumentParser(prog="python -m lib.study", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    labels = commands.add_parser("labels", help="resolution vs labelled events: pretrained, frozen encoder, scratch")
    add_label_arguments(labels)
    add_knob_flags(labels)
    summary = commands.add_parser("summary", help="the runs of a sweep or experiment: table and learning curves")
    add_summary_arguments(summary)
    return parser


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "labels":
            return run_labels(args, os.environ if env is None else env)
        outputs = run_summary(args)
    except (ConfigError, JobError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunFailedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("summary written: " + ", ".join(str(path) for path in outputs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
