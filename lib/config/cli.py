"""Command-line front end of the config: `--config FILE`, common flags and `--set key=value`.

The common-flag table below is the only place that maps a flag to its config
key. A flag's form (switch, list, plain value) and its help text come from the
schema field it sets; its value is validated together with the file.
Precedence: schema defaults < YAML file < flags < `--set`.
"""
from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from lib.config.load import ConfigError, load_config
from lib.config.schema import MAEConfig, RunConfig

COMMON_FLAGS: dict[str, str] = {
    "epochs": "training.epochs",
    "batch_size": "data.batch_size",
    "lr": "training.lr",
    "train_path": "data.train_path",
    "val_path": "data.val_path",
    "save_dir": "checkpoint.save_dir",
    "run_name": "checkpoint.run_name",
    "resume_from": "checkpoint.resume_from",
    "mask_ratio": "training.mask_ratio",
    "num_workers": "data.num_workers",
    "seed": "training.seed",
    "amp": "training.amp",
    "compile": "training.compile",
}


def _field_at(root: type[BaseModel], dotted_key: str) -> FieldInfo:
    model: Any = root
    field = None
    for part in dotted_key.split("."):
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            raise ConfigError(f"flag target {dotted_key!r} is not a key of {root.__name__}")
        field = model.model_fields[part]
        model = field.annotation
    return field


def _flag_options(root: type[BaseModel], dotted_key: str) -> dict[str, Any]:
    """argparse options for the flag that sets `dotted_key`: a switch for bools, one-or-more for lists."""
    field = _field_at(root, dotted_key)
    about = (field.description or "").rstrip(".")
    default = "" if field.default is None else f"; default {field.default}"
    help_text = f"{about} [{dotted_key}{default}]".strip().replace("%", "%%")
    options: dict[str, Any] = {"default": None, "help": help_text}
    annotation = field.annotation
    if annotation is bool:
        options["action"] = argparse.BooleanOptionalAction
    elif get_origin(annotation) is Literal:
        options["metavar"] = "{" + ",".join(map(str, get_args(annotation))) + "}"
    elif get_origin(annotation) is dict or any(get_origin(kind) is list for kind in get_args(annotation)):
        options["nargs"] = "+"  # a list, or a mapping given as a list of names (e.g. --tasks energy position)
    elif annotation in (int, float):
        options["type"] = annotation
        options["metavar"] = annotation.__name__.upper()
    return options


def _flag_table(extra_flags: Mapping[str, str]) -> dict[str, str]:
    return {**COMMON_FLAGS, **{flag.lstrip("-"): key for flag, key in extra_flags.items()}}


def build_arg_parser(
    description: str,
    extra_flags: Mapping[str, str] = {},
    *,
    root: type[RunConfig] = MAEConfig,
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """Parser with --config, --set and the common flags, plus `extra_flags` {flag name: dotted key}."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML config (default: all schema defaults)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override any key, value parsed as YAML (repeatable), e.g. --set training.time.weight=2",
    )
    for flag, dotted_key in _flag_table(extra_flags).items():
        parser.add_argument(f"--{flag}", dest=flag, **_flag_options(root, dotted_key))
    return parser


def cli_values(args: argparse.Namespace, extra_flags: Mapping[str, str] = {}) -> dict[str, Any]:
    """{dotted_key: value} for the flags given on the command line."""
    table = _flag_table(extra_flags)
    return {key: getattr(args, flag) for flag, key in table.items() if getattr(args, flag) is not None}


def parse_args(
    argv: Sequence[str] | None,
    *,
    root: type[RunConfig] = MAEConfig,
    description: str = "",
    extra_flags: Mapping[str, str] = {},
    prog: str | None = None,
) -> tuple[RunConfig, argparse.Namespace]:
    """Parse the command line and resolve the config; a bad config exits with status 2 and a readable message."""
    parser = build_arg_parser(description, extra_flags, root=root, prog=prog)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides, root=root, cli=cli_values(args, extra_flags))
    except ConfigError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    return cfg, args
