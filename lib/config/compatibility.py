"""Which resolved-config keys give a run's weights their meaning, and how two configs differ in them.

A run directory's weights are only meaningful under the config that produced them: the model
architecture, the input normalization, the tasks and the geometry, the input branches and the
objective the MAE was trained with. A forced re-submission (jobs/) and a resume (lib.engine)
compare the new resolved config with the run's own in these keys and refuse a difference;
every other key (epochs, lr, batch size, paths, ...) may change between jobs of one run.
Plain mappings in, plain values out: torch-free, so the job suite can use it on a login node.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lib.config.resolved import flatten_config

WEIGHT_DEFINING_KEYS: dict[str, str] = {
    "model": "the architecture: the shape of every tensor and what it computes",
    "normalization": "how raw npho and time become inputs: the same weights on other inputs mean something else",
    "tasks": "which regression heads exist and the targets (and their standardization) they were trained on",
    "geometry": "which sensor sits where: the face maps and the graph the encoder was built on",
    "data.npho_branch": "the input branch read as the photon count channel",
    "data.time_branch": "the input branch read as the time channel",
    "training.mask_ratio": "the MAE's objective: how much of each event the weights learned to reconstruct",
    "training.time": "the time channel's objective: which sensors teach time, their weights, their mask ratio",
    "training.mask_mode": "the inpainter's objective: which sensors it learned to fill (random or dead patterns)",
}
"""Dotted keys (whole sections, subsections or single keys) whose values fix what the weights mean, each with
the reason. Anything else (lr, epochs, batch size, schedule, logging, paths) may change within a run."""

STARTING_POINT_KEYS: dict[str, str] = {
    "model.pretrained_encoder": "where the encoder weights started; a resume continues from the checkpoint's",
    "model.allow_normalization_mismatch": "a permission checked when the pretrained encoder is loaded, not a "
                                          "property of the weights",
}
"""Keys inside a weight-defining section that only say where the weights started: not compared."""

SECTIONS_COMPARED_WHEN_SAVED = ("geometry",)
"""Weight-defining sections younger than some saved configs: compared only when the saved config has them."""


class _Absent:
    """Stands for a key that one of the two configs does not have (e.g. a section of the other root)."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT = _Absent()


def _covered(key: str, prefixes: Iterable[str]) -> bool:
    """True when the dotted `key` is one of `prefixes` or lies under one of them."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def _comparable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_comparable(item) for item in value]
    return value


def weight_defining_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (saved value, wanted value)} for every weight-defining key on which two resolved configs differ.

    `saved` is the run's own config (its config.yaml, or the one embedded in its checkpoint) and
    `wanted` the new one, both as nested plain data (lib.config.to_dict). A key that only one of
    them has counts as a difference, its missing side ABSENT; tuples and lists with equal items are
    equal. Empty: the weights keep their meaning.
    """
    prefixes = [prefix for prefix in WEIGHT_DEFINING_KEYS
                if prefix.split(".")[0] in saved or prefix.split(".")[0] not in SECTIONS_COMPARED_WHEN_SAVED]
    flat_saved, flat_wanted = flatten_config(saved), flatten_config(wanted)
    differences = {}
    for key in dict.fromkeys([*flat_saved, *flat_wanted]):
        if not _covered(key, prefixes) or _covered(key, STARTING_POINT_KEYS):
            continue
        before, after = flat_saved.get(key, ABSENT), flat_wanted.get(key, ABSENT)
        if _comparable(before) != _comparable(after):
            differences[key] = (before, after)
    return differences


def describe_differences(differences: Mapping[str, tuple[Any, Any]]) -> str:
    """The differences as `key: saved -> wanted` items joined by "; " (for one-line error messages)."""
    return "; ".join(f"{key}: {before!r} -> {after!r}" for key, (before, after) in differences.items())
