"""What to write instead of an unknown config key, and whether a file is a research-code config.

A suggestion looks, in this order, for: the research code's name of a key (the table in
lib/config/research_keys.py), a common synonym of its name (schema KEY_SYNONYMS), the same name in
another section, the research code's name in another section, the nearest name in its own section,
the nearest name anywhere.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

from pydantic import BaseModel

from lib.config.research_keys import RESEARCH_KEYS, research_rule, research_section
from lib.config.research_rules import TASK_WILDCARD
from lib.config.schema import KEY_SYNONYMS, LEGACY_KEYS

RESEARCH_MARKERS_NEEDED = 2
"""A file that fails validation and has this many keys only the research code uses is called a
research-code config (one key is more likely a slip, which gets its own suggestion)."""


def section_model(annotation: object) -> type[BaseModel] | None:
    """The section model of a field annotation (also inside Optional / dict values), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def is_mapping_of_sections(annotation: object) -> bool:
    """Whether a field holds name -> section (like `tasks`), so the next key segment is a free name."""
    return getattr(annotation, "__origin__", None) is dict and section_model(annotation) is not None


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted keys of every leaf of `model` (sections recursed; name -> section mappings left out)."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        section = section_model(field.annotation)
        if is_mapping_of_sections(field.annotation):
            continue
        keys += schema_keys(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"]
    return keys


def _readable(target: str) -> str:
    return target.replace(TASK_WILDCARD, "<task>")


def _research_hint(key: str) -> str | None:
    rule = research_rule(key)
    if rule is not None:
        target = rule.target_for(key)
        if target is None:
            return f"a research-code key with no equivalent here ({rule.about}); remove it"
        return None if target == key else f"did you mean {_readable(target)!r}? (the research code's name for it)"
    rules = research_section(key)
    if not rules:
        return None
    targets = sorted({_readable(rule.target) for rule in rules if rule.target})
    if not targets:
        return "a research-code section with no equivalent here; remove it"
    return f"a research-code section; its settings are now {', '.join(targets)}"


def _did_you_mean(key: str) -> str:
    return f"did you mean {key!r}?"


def suggest_key(key: str, section: type[BaseModel] | None, root: type[BaseModel]) -> str:
    """What to do about the unknown dotted `key` of `section` (a section of `root`): a one-line hint."""
    hint = _research_hint(key)
    if hint:
        return hint
    prefix, _, name = key.rpartition(".")
    valid = list(section.model_fields) if section is not None else []
    name = KEY_SYNONYMS.get(name, name)
    if name in valid:
        return _did_you_mean(".".join(filter(None, [prefix, name])))
    everywhere = schema_keys(root)
    same_name = [full for full in everywhere if full.rpartition(".")[2] == name]
    if same_name:
        return " or ".join(map(_did_you_mean, same_name))
    renamed = [rule.target for old, rule in RESEARCH_KEYS.items()
               if old.rpartition(".")[2] == name and rule.target and TASK_WILDCARD not in old]
    if renamed:
        return f"{_did_you_mean(renamed[0])} (the research code's name for it)"
    aliases = [alias for alias, target in KEY_SYNONYMS.items() if target in valid]
    nearby = difflib.get_close_matches(name, valid + aliases, n=1, cutoff=0.6)
    if nearby:
        return _did_you_mean(".".join(filter(None, [prefix, KEY_SYNONYMS.get(nearby[0], nearby[0])])))
    leaves = {full.rpartition(".")[2]: full for full in everywhere}
    farther = difflib.get_close_matches(name, list(leaves), n=1, cutoff=0.75)
    if farther:
        return _did_you_mean(leaves[farther[0]])
    return f"valid keys in {prefix or 'the top level'}: {', '.join(valid)}"


def is_schema_key(root: type[BaseModel], key: str) -> bool:
    """Whether dotted `key` is a key (leaf or section) of `root`; keys under name -> section mappings
    count as unknown here."""
    model: type[BaseModel] | None = root
    for part in key.split("."):
        if model is None or part not in model.model_fields:
            return False
        annotation = model.model_fields[part].annotation
        model = None if is_mapping_of_sections(annotation) else section_model(annotation)
    return True


def research_markers(keys: Iterable[str], root: type[BaseModel]) -> list[str]:
    """The keys among `keys` that only the research code uses (not ours, nor our legacy keys)."""
    markers = []
    for key in keys:
        rule = research_rule(key)
        if rule is None or key in LEGACY_KEYS or is_schema_key(root, key):
            continue
        if rule.target_for(key) != key:
            markers.append(key)
    return markers
