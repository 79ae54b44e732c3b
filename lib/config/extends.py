"""`extends: base.yaml` in a config file: start from another file and override some of its keys.

The path is relative to the file that names it; the files are merged key by key (mappings
recursively, every other value replaced), so a single-task file can hold just `tasks: [energy]`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lib.config.load import ConfigError, Sources, read_yaml

EXTENDS_KEY = "extends"


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_file(path: Path, _chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Sources]:
    """read_yaml with `extends:` resolved (base first, this file's keys win); errors name the chain."""
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigError(f"{path}: `{EXTENDS_KEY}` forms a cycle ({cycle}); remove one of the links")
    data, sources = read_yaml(path)
    base_name = data.pop(EXTENDS_KEY, None)
    if base_name is None:
        return data, sources
    if not isinstance(base_name, str):
        raise ConfigError(f"{sources.get(EXTENDS_KEY, path)}: `{EXTENDS_KEY}` must be a file name, got {base_name!r}")
    base_path = path.parent / base_name
    if not base_path.is_file():
        raise ConfigError(f"{sources.get(EXTENDS_KEY, path)}: `{EXTENDS_KEY}: {base_name}` names a missing file "
                          f"({base_path})")
    base, base_sources = read_config_file(base_path, (*_chain, resolved))
    return _merge(base, data), {**base_sources, **sources}
