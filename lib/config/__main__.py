"""`python -m lib.config show|schema`: print a resolved config, or write the JSON Schema for editors.

    python -m lib.config show [--kind mae] --config FILE.yaml [--epochs 5] [--set training.lr=3e-4]
    python -m lib.config schema [--kind mae] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lib.config.cli import parse_args
from lib.config.resolved import dump_yaml
from lib.config.schema import ROOTS

log = logging.getLogger(__name__)


def _kind_parser(**kwargs) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(**kwargs)
    parser.add_argument("--kind", choices=sorted(ROOTS), default="mae", help="which root config (default: mae)")
    return parser


def show(argv: Sequence[str]) -> None:
    """Print the resolved config (file + flags + --set, all defaults filled in) as YAML."""
    kind_args, rest = _kind_parser(add_help=False).parse_known_args(argv)
    cfg, _ = parse_args(
        rest,
        root=ROOTS[kind_args.kind],
        description="Print the resolved config as YAML (also accepts --kind).",
        prog="python -m lib.config show",
    )
    sys.stdout.write(dump_yaml(cfg))


def schema(argv: Sequence[str]) -> None:
    """Write the JSON Schema of a root config (stdout, or --out FILE)."""
    parser = _kind_parser(prog="python -m lib.config schema", description=schema.__doc__)
    parser.add_argument("--out", type=Path, help="output file (default: stdout)")
    args = parser.parse_args(argv)
    text = json.dumps(ROOTS[args.kind].model_json_schema(), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    log.info("wrote JSON Schema of %s config to %s", args.kind, args.out)


COMMANDS = {"show": show, "schema": schema}


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to a sub-command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        sys.exit(f"usage: python -m lib.config {{{','.join(COMMANDS)}}} [options]   (-h after a command for help)")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
