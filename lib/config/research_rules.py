"""Vocabulary of the research-code key table (lib/config/research_keys.py).

A `Rule` says what becomes of one key of a research-code config (weiyuanli-icepp/xec-ml-wl): its
`target` (our dotted key, for suggestions; None when there is none) and a `convert` function that
turns the key's value, read together with the rest of the old file (`OldFile`), into an `Outcome`:
mapped to new keys and values, dropped (not needed here) or lost (no equivalent, the setting is
lost).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lib.config.task_schema import RESEARCH_TASK_NAMES

MAPPED, DROPPED, LOST = "mapped", "dropped", "lost"
TASK_WILDCARD = "*"
"""A key segment of the table that matches any task name (`tasks.*.loss_fn`)."""


@dataclass(frozen=True)
class Outcome:
    """What becomes of one old key: new {dotted key: value} (mapped), or why it is left out."""

    status: str
    assignments: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def mapped(assignments: Mapping[str, Any], note: str = "") -> Outcome:
    """The old key becomes `assignments` (may be empty when another key of the file carries it)."""
    return Outcome(MAPPED, dict(assignments), note)


def dropped(note: str) -> Outcome:
    """The old key is not needed here (off, null, unused by the chosen setting, ...)."""
    return Outcome(DROPPED, note=note)


def lost(note: str) -> Outcome:
    """The old key changed training and this project has no equivalent."""
    return Outcome(LOST, note=note)


def new_task_name(key: str) -> str:
    """Our name of the task in an old key `tasks.<name>...` / `reweighting.<name>...`."""
    name = key.split(".")[1]
    return RESEARCH_TASK_NAMES.get(name, name)


class OldFile:
    """The research-code config being migrated: its kind (mae, reg, inp) and its leaf values."""

    def __init__(self, kind: str, values: Mapping[str, Any]):
        self.kind = kind
        self.values = dict(values)

    def get(self, key: str, default: Any = None) -> Any:
        """Value of the old key, `default` when the file does not give it."""
        return self.values.get(key, default)

    def has(self, key: str) -> bool:
        """Whether the file gives `key`."""
        return key in self.values

    def task_enabled(self, name: str) -> bool:
        """Whether task `name` (old name) is on: the research code trained only tasks with `enabled: true`."""
        return self.get(f"tasks.{name}.enabled") is True

    def enabled_tasks(self) -> list[str]:
        """Old names of the enabled tasks, in file order."""
        names = dict.fromkeys(key.split(".")[1] for key in self.values if key.startswith("tasks."))
        return [name for name in names if self.task_enabled(name)]

    def scheduler(self) -> str:
        """The research code's schedule name: lr_scheduler if given (null = constant), else the older
        use_scheduler / scheduler pair; `none` when neither says anything."""
        if self.has("training.lr_scheduler"):
            name = self.get("training.lr_scheduler")
        elif self.get("training.use_scheduler") is False:
            name = None
        else:
            name = self.get("training.scheduler")
        return "none" if name in (None, False, "", "null") else str(name)


Convert = Callable[[Any, str, OldFile], Outcome]
"""(value, old dotted key, old file) -> Outcome."""


@dataclass(frozen=True)
class Rule:
    """One research-code key: our key it became (None: none) and how its value converts."""

    target: str | None
    convert: Convert
    about: str = ""
    """Why there is no equivalent (rules without a target); shown by the loader's suggestions."""

    def target_for(self, key: str) -> str | None:
        """`target` with the task segment filled in for the concrete old `key`."""
        return None if self.target is None else fill_task(self.target, key)


def fill_task(target: str, key: str) -> str:
    """`target` with its task wildcard replaced by our name of the task in the old `key`."""
    return target.replace(TASK_WILDCARD, new_task_name(key)) if TASK_WILDCARD in target else target


def _unchanged(value: Any) -> Any:
    return value


def _is_empty(value: Any) -> bool:
    return value is None or value == ""


def rename(target: str, convert: Callable[[Any], Any] = _unchanged, note: str = "") -> Rule:
    """Old key -> `target` with the value through `convert`; null or "" leaves our default in place."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        if _is_empty(value):
            return dropped("this project's default applies")
        return mapped({fill_task(target, key): convert(value)}, note)

    return Rule(target, apply)


def choice(target: str, values: Mapping[Any, Any], note: str = "") -> Rule:
    """Old key -> `target`, old value -> new value through the table `values`; others are lost."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        if _is_empty(value):
            return dropped("this project's default applies")
        if value not in values:
            return lost(f"value {value!r} has no equivalent among {sorted(map(str, set(values.values())))}")
        return mapped({target: values[value]}, note)

    return Rule(target, apply)


def _is_off(value: Any) -> bool:
    return value in (None, False, 0, "", "none", "false")


def no_equivalent(reason: str) -> Rule:
    """A setting this project does not have; dropped quietly when it is off (null, false, 0, none)."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        return dropped("off, as here") if _is_off(value) else lost(reason)

    return Rule(None, apply, about=reason)


def not_needed(reason: str) -> Rule:
    """A setting with no effect on what is trained (performance, logging, file layout)."""
    return Rule(None, lambda value, key, old: dropped(reason), about=reason)


def companion_of(switch: str, reason: str) -> Rule:
    """A parameter of the feature switched by old key `switch`: lost with it, dropped when it is off."""

    def apply(value: Any, key: str, old: OldFile) -> Outcome:
        return lost(reason) if old.get(switch) is True else dropped(f"{switch} is off")

    return Rule(None, apply, about=reason)


def legacy(key: str, legacy_keys: Mapping[str, str]) -> Rule:
    """A key the research code deprecated itself and our loader still accepts with a deprecation
    warning: the migration writes its current name, following `legacy_keys` (schema LEGACY_KEYS)."""
    target = key
    while target in legacy_keys:
        target = legacy_keys[target]
    return rename(target, note="deprecated in the research code too")
