"""The resolved config as data and files: dict/YAML dumps, atomic writes, re-validation, diffs."""
from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lib.io.atomic import atomic_write_text
from lib.config.load import migrate_legacy, read_yaml, validate_data
from lib.config.schema import MAEConfig, RunConfig


class _ResolvedDumper(yaml.SafeDumper):
    """Block-style mappings; short lists of scalars on one line (betas: [0.9, 0.95])."""


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    short = all(not isinstance(item, (list, dict)) for item in items) and len(repr(items)) <= 60
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=short)


_ResolvedDumper.add_representer(list, _represent_list)


def to_dict(cfg: BaseModel) -> dict[str, Any]:
    """The config as plain YAML/JSON-safe data (tuples become lists)."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: BaseModel) -> str:
    """The config as YAML text, sections in schema order."""
    return dump_data_yaml(to_dict(cfg))


def dump_data_yaml(data: Mapping[str, Any]) -> str:
    """Plain config data as YAML text in the layout of dump_yaml (keys in the given order)."""
    return yaml.dump(dict(data), Dumper=_ResolvedDumper, sort_keys=False, default_flow_style=False)


def write_resolved(cfg: BaseModel, path: str | Path) -> Path:
    """Write the resolved config as YAML atomically; returns the path."""
    return atomic_write_text(path, dump_yaml(cfg))


def load_resolved(source: Mapping[str, Any] | str | Path, root: type[RunConfig] = MAEConfig) -> RunConfig:
    """Re-validate a resolved config: a dict (e.g. from a checkpoint) or a YAML file written by write_resolved."""
    if isinstance(source, Mapping):
        data, sources, origin = copy.deepcopy(dict(source)), {}, "resolved config"
    else:
        (data, sources), origin = read_yaml(Path(source)), str(source)
    migrate_legacy(data, sources)
    return validate_data(data, root, sources, origin=origin)


def flatten_config(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: leaf value} of a nested config dict (keys start with `prefix.` when given)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        flat.update(flatten_config(value, name) if isinstance(value, Mapping) else {name: value})
    return flat


def diff_from_defaults(cfg: RunConfig) -> dict[str, tuple[Any, Any]]:
    """{dotted_key: (default, value)} for every leaf of `cfg` that differs from its root's defaults."""
    defaults = flatten_config(to_dict(type(cfg)()))
    values = flatten_config(to_dict(cfg))
    return {
        key: (defaults.get(key), values.get(key))
        for key in dict.fromkeys([*defaults, *values])
        if defaults.get(key) != values.get(key)
    }
