"""Convert a config of the research code (weiyuanli-icepp/xec-ml-wl) into one of ours.

Every leaf key of the old file (and the research code's defaults that differ from ours in effect,
for keys the file leaves out) goes through its rule in lib/config/research_keys.py; the new keys
are collected into one config, which must validate against our schema before it is written.
The report lists what was mapped (old -> new), what was dropped and why, and what has no
equivalent. The old file is only read.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lib.config.load import ConfigError, Sources, read_yaml, validate_data
from lib.config.research_keys import DEFAULT_ALIASES, RESEARCH_DEFAULTS, guess_kind, research_rule, research_section
from lib.config.research_rules import DROPPED, LOST, MAPPED, OldFile, Outcome, dropped, lost
from lib.config.resolved import dump_data_yaml
from lib.config.roots import ROOTS
from lib.config.schema import RunConfig
from lib.config.suggestions import is_mapping_of_sections, section_model
from lib.io.atomic import atomic_write_text

RESEARCH_KINDS = ("mae", "reg", "inp")
"""The research code's config kinds; each becomes our root config of the same kind (lib.config.roots)."""
_HEADINGS = {
    MAPPED: "mapped (old -> new)",
    DROPPED: "dropped (not needed here)",
    LOST: "no equivalent (these settings are lost)",
}


@dataclass(frozen=True)
class Entry:
    """One old key: its value, where it was given ("file:line"), its outcome, and whether it is not in
    the file but a default of the research code."""

    key: str
    value: Any
    where: str | None
    outcome: Outcome
    research_default: bool = False


@dataclass
class Migration:
    """The converted config (`data`), what became of each old key, and the kind it was read as."""

    kind: str
    guessed_from: list[str] | None
    """Marker keys the kind was guessed from (None: the kind was given)."""
    data: dict[str, Any] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)

    @property
    def root(self) -> type[RunConfig]:
        """Our root config the converted data is validated against."""
        return ROOTS[self.kind]


def flatten_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{dotted key: value} of every leaf; lists and empty mappings are leaves."""
    leaves: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            leaves.update(flatten_leaves(value, f"{name}."))
        else:
            leaves[name] = value
    return leaves


def _defaults_for(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The research code's defaults of `kind` for settings the file does not give."""
    def gives(key: str) -> bool:
        return any(name == key or name.startswith(f"{key}.") for name in given)

    return {key: value for key, value in RESEARCH_DEFAULTS[kind].items()
            if not gives(key) and not any(map(gives, DEFAULT_ALIASES.get(key, ())))}


def _outcome(key: str, value: Any, old: OldFile) -> Outcome:
    rule = research_rule(key)
    if rule is None:
        if research_section(key):
            return dropped("an empty section")
        return dropped("not a key of the research code's config, which ignored it too")
    try:
        return rule.convert(value, key, old)
    except (TypeError, ValueError, AttributeError, IndexError):
        return lost(f"value {value!r} could not be converted")


def _assign(flat: dict[str, Any], owners: dict[str, str], key: str, outcome: Outcome) -> Outcome:
    """Add the outcome's assignments to `flat` ({new dotted key: value}); a clash with an earlier old key
    keeps the earlier value and reports this one as lost."""
    for new_key, value in outcome.assignments.items():
        if new_key in flat and flat[new_key] != value:
            return lost(f"{new_key} is already {flat[new_key]!r} from {owners[new_key]}; this project has one such key")
    for new_key, value in outcome.assignments.items():
        flat.setdefault(new_key, value)
        owners.setdefault(new_key, key)
    return outcome


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{dotted key: value} -> nested mappings ({} values make a section that may stay empty)."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        if not (value == {} and leaf in node):
            node[leaf] = value
    return tree


def _in_schema_order(data: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """`data` with the keys of every section in the order of its schema (unknown keys last)."""
    ordered: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        value, section = data.get(name), section_model(field.annotation)
        if name not in data:
            continue
        if section is not None and isinstance(value, dict) and is_mapping_of_sections(field.annotation):
            value = {task: _in_schema_order(settings, section) for task, settings in value.items()}
        elif section is not None and isinstance(value, dict):
            value = _in_schema_order(value, section)
        ordered[name] = value
    return {**ordered, **{name: value for name, value in data.items() if name not in ordered}}


def migrate_data(data: Mapping[str, Any], sources: Sources, kind: str | None = None) -> Migration:
    """Convert research-code config `data` ({dotted key: "file:line"} in `sources`); kind guessed if None."""
    given = flatten_leaves(data)
    guessed_from = None
    if kind is None:
        kind, guessed_from = guess_kind(given)
    old = OldFile(kind, {**given, **_defaults_for(kind, given)})
    migration = Migration(kind, guessed_from)
    flat: dict[str, Any] = {}
    owners: dict[str, str] = {}
    for key, value in old.values.items():
        outcome = _assign(flat, owners, key, _outcome(key, value, old))
        migration.entries.append(Entry(key, value, sources.get(key), outcome, research_default=key not in given))
    migration.data = _in_schema_order(_nest(flat), migration.root)
    return migration


def migrate_file(path: Path, kind: str | None = None) -> Migration:
    """Read the research-code config at `path` and convert it (see migrate_data). Raises ConfigError."""
    data, sources = read_yaml(path)
    return migrate_data(data, sources, kind)


def check_migrated(migration: Migration) -> RunConfig:
    """Validate the converted config against our schema; a failure is a ConfigError."""
    return validate_data(migration.data, migration.root, origin="the migrated config")


def _show(value: Any) -> str:
    return json.dumps(value, default=str)


def _line(entry: Entry) -> str:
    where = " (research-code default)" if entry.research_default else f" ({entry.where})" if entry.where else ""
    head = f"  {entry.key}{where} = {_show(entry.value)}"
    outcome = entry.outcome
    if outcome.status != MAPPED:
        return f"{head}: {outcome.note}" if outcome.note else head
    new = ", ".join(f"{key} = {_show(value)}" for key, value in outcome.assignments.items() if value != {})
    new = new or ", ".join(outcome.assignments) or "(carried by another key)"
    return f"{head} -> {new}" + (f"; {outcome.note}" if outcome.note else "")


def kind_line(migration: Migration, source: Path) -> str:
    """Which kind the file was read as and why."""
    if migration.guessed_from is None:
        why = "as given"
    elif migration.guessed_from:
        why = f"guessed from {', '.join(migration.guessed_from)}; pass --kind to choose"
    else:
        why = "guessed: no key of a regressor or inpainter config; pass --kind to choose"
    return f"research-code config {source}: kind {migration.kind} ({why})"


def format_report(migration: Migration, source: Path) -> str:
    """The migration report: the kind, then the old keys grouped by outcome (defaults left out when dropped)."""
    lines = [kind_line(migration, source)]
    for status, heading in _HEADINGS.items():
        group = [_line(e) for e in migration.entries
                 if e.outcome.status == status and not (e.research_default and status == DROPPED)]
        if group:
            lines += [f"{heading}:", *group]
    return "\n".join(lines) + "\n"


def migrated_yaml(migration: Migration, source: Path) -> str:
    """The new config file: a header naming its origin and the settings that were lost, then the YAML."""
    lines = [f"# Migrated from {source} (research code, kind {migration.kind}) by `python -m lib.config migrate`.",
             f"# Check it with: python -m lib.config show --kind {migration.kind} --config <this file>"]
    lost_here = [e for e in migration.entries if e.outcome.status == LOST]
    if lost_here:
        lines.append("# Settings of the old file with no equivalent here:")
        lines += [f"#   {e.key} = {_show(e.value)}: {e.outcome.note}" for e in lost_here]
    return "\n".join(lines) + "\n" + dump_data_yaml(migration.data)


def write_migrated(path: Path, text: str, source: Path, force: bool = False) -> Path:
    """Write the new config atomically; never over the old file, nor over an existing file without `force`."""
    if path.resolve() == source.resolve():
        raise ConfigError(f"--out {path} is the file being migrated; choose another file name")
    if path.exists() and not force:
        raise ConfigError(f"{path} exists; pass --force to replace it, or choose another --out")
    return atomic_write_text(path, text)
