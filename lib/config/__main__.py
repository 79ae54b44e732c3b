"""`python -m lib.config show|schema|migrate`: print a resolved config, write the JSON Schema for
editors, or convert a config of the research code into one of ours.

    python -m lib.config show [--kind mae] --config FILE.yaml [--epochs 5] [--set training.lr=3e-4]
    python -m lib.config schema [--kind mae] [--out FILE.json]
    python -m lib.config migrate OLD.yaml [--kind mae|reg|inp] [--out NEW.yaml [--force]]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from lib.config.cli import parse_args
from lib.config.load import ConfigError
from lib.config.research_migration import (
    RESEARCH_KINDS,
    check_migrated,
    format_report,
    migrate_file,
    migrated_yaml,
    write_migrated,
)
from lib.config.resolved import dump_yaml
from lib.config.roots import ROOTS
from lib.io.atomic import atomic_write_text

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
    atomic_write_text(args.out, text)
    log.info("wrote JSON Schema of %s config to %s", args.kind, args.out)


def migrate(argv: Sequence[str]) -> None:
    """Convert a research-code config; the report goes to stdout (stderr when the YAML does)."""
    parser = argparse.ArgumentParser(prog="python -m lib.config migrate", description=migrate.__doc__)
    parser.add_argument("old", type=Path, metavar="OLD.yaml", help="config of the research code (read only)")
    parser.add_argument("--kind", choices=RESEARCH_KINDS, help="its kind (default: guessed from its keys)")
    parser.add_argument("--out", type=Path, metavar="NEW.yaml", help="write the new config here (default: stdout)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        migration = migrate_file(args.old, args.kind)
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    report = format_report(migration, args.old)
    try:
        check_migrated(migration)
        text = migrated_yaml(migration, args.old)
        if args.out is not None:
            write_migrated(args.out, text, args.old, force=args.force)
    except ConfigError as err:
        parser.exit(2, f"{report}{parser.prog}: error: {err}\n")
    if args.out is None:
        sys.stdout.write(text)
        sys.stderr.write(report)
        return
    kind = migration.root.kind
    sys.stdout.write(f"{report}wrote {args.out}; check it with: python -m lib.config show --kind {kind} "
                     f"--config {args.out}\n")


COMMANDS = {"show": show, "schema": schema, "migrate": migrate}


def main(argv: Sequence[str] | None = None) -> None:
    """Dispatch to a sub-command."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        sys.exit(f"usage: python -m lib.config {{{','.join(COMMANDS)}}} [options]   (-h after a command for help)")
    COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    main()
