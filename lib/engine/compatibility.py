"""Whether a checkpoint may be resumed under a config: the settings that define what its weights mean must match."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from lib.config import flatten_config
from lib.engine.checkpoint import CheckpointError

WEIGHT_DEFINING_KEYS: dict[str, str] = {
    "model": "the architecture: the shape of every tensor and what it computes",
    "normalization": "how raw npho and time become inputs: the same weights on other inputs mean something else",
    "tasks": "which regression heads exist and the targets (and their standardization) they were trained on",
    "geometry": "which sensor sits where: the face maps and the graph the encoder was built on",
    "data.npho_branch": "the input branch read as the photon count channel",
    "data.time_branch": "the input branch read as the time channel",
    "training.mask_ratio": "the MAE's objective: how much of each event the weights learned to reconstruct",
    "training.time": "the time channel's objective: which sensors teach time, their weights, their mask ratio",
}
"""Resolved-config keys (whole sections, subsections or single keys) whose values fix what the weights mean,
each with the reason. A run may only resume from a checkpoint that agrees on every one of them; anything
else (lr, epochs, batch size, schedule, logging, paths) may change between a run and its resume."""

STARTING_POINT_KEYS: dict[str, str] = {
    "model.pretrained_encoder": "where the encoder weights started; a resume continues from the checkpoint's",
    "model.allow_normalization_mismatch": "a permission checked when the pretrained encoder is loaded, not a "
                                          "property of the weights",
}
"""Keys inside a weight-defining section that only say where the weights started: not compared."""

SECTIONS_COMPARED_WHEN_SAVED = ("geometry",)
"""Weight-defining sections younger than some checkpoints: compared only when the checkpoint's config has them."""


def _covered(key: str, prefixes: Any) -> bool:
    """True when the dotted `key` is one of `prefixes` or lies under one of them."""
    return any(key == prefix or key.startswith(prefix + ".") for prefix in prefixes)


def weight_defining_differences(saved: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (checkpoint value, config value)} for every weight-defining key on which two resolved configs
    disagree (a key one of them lacks counts as None there)."""
    prefixes = [prefix for prefix in WEIGHT_DEFINING_KEYS
                if prefix.split(".")[0] in saved or prefix.split(".")[0] not in SECTIONS_COMPARED_WHEN_SAVED]
    saved_flat, wanted_flat = flatten_config(saved), flatten_config(wanted)
    keys = sorted(key for key in {*saved_flat, *wanted_flat}
                  if _covered(key, prefixes) and not _covered(key, STARTING_POINT_KEYS))
    return {key: (saved_flat.get(key), wanted_flat.get(key)) for key in keys
            if saved_flat.get(key) != wanted_flat.get(key)}


def check_resume_compatible(checkpoint: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """Refuse (CheckpointError) to resume `checkpoint` under the resolved `config` when the schema version or
    any weight-defining key differs; the message names every differing key with both values."""
    if checkpoint.get("schema_version") != config.get("schema_version"):
        raise CheckpointError(
            f"{path} was written with config schema_version {checkpoint.get('schema_version')}, "
            f"this run uses {config.get('schema_version')}; start a new run instead of resuming"
        )
    differences = weight_defining_differences(checkpoint.get("config", {}), config)
    if differences:
        details = "; ".join(f"{key}: checkpoint={saved!r}, config={wanted!r}"
                            for key, (saved, wanted) in differences.items())
        raise CheckpointError(
            f"cannot resume from {path}: settings that define what its weights mean differ ({details}); "
            "resume with the checkpoint's settings, or start a new run (a new checkpoint.run_name) with these"
        )
