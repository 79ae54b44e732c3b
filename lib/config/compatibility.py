"""Which resolved-config keys change what a run's weights mean, and how two configs differ in them.

A run directory's weights are only meaningful under the config that produced them: the model
architecture, the input normalization, the tasks and the geometry, the input branches and the
masking the MAE was trained with. A forced re-submission (jobs/) and a resume (lib.engine)
compare the new resolved config with the run's own in these keys and refuse a difference;
every other key (epochs, lr, batch size, paths, ...) may change between jobs of one run.
Plain mappings in, plain values out: torch-free, so the job suite can use it on a login node.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lib.config.resolved import flatten_config

WEIGHT_DEFINING_KEYS: tuple[str, ...] = (
    "model",
    "normalization",
    "tasks",
    "geometry",
    "data.npho_branch",
    "data.time_branch",
    "training.mask_ratio",
    "training.time",
)
"""Dotted keys (a section covers every key below it) whose values give the weights their meaning."""

EXEMPT_KEYS: tuple[str, ...] = ("model.pretrained_encoder", "model.allow_normalization_mismatch")
"""Keys below WEIGHT_DEFINING_KEYS that only say where a run started from, not what its weights mean."""


class _Absent:
    """Stands for a key that one of the two configs does not have (e.g. a section of the other root)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def _under(key: str, roots: tuple[str, ...]) -> bool:
    return any(key == root or key.startswith(root + ".") for root in roots)


def weight_defining_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (old value, new value)} of the weight-defining keys in which two resolved configs differ.

    `old` and `new` are resolved configs as nested plain data (lib.config.to_dict, a config.yaml,
    the config embedded in a checkpoint). A key present in only one of them counts as a difference
    (its missing side is ABSENT); tuples and lists with equal items are equal. Empty: compatible.
    """
    flat_old, flat_new = flatten_config(old), flatten_config(new)
    differences = {}
    for key in dict.fromkeys([*flat_old, *flat_new]):
        if not _under(key, WEIGHT_DEFINING_KEYS) or _under(key, EXEMPT_KEYS):
            continue
        before, after = flat_old.get(key, ABSENT), flat_new.get(key, ABSENT)
        if _comparable(before) != _comparable(after):
            differences[key] = (before, after)
    return differences


def _comparable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


def describe_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
    """The differences as `key: old -> new` items joined by "; " (for one-line error messages)."""
    return "; ".join(f"{key}: {before!r} -> {after!r}" for key, (before, after) in differences.items())
