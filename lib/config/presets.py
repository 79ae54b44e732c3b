"""Named parameter sets for config sections (`preset: tiny`, `preset: legacy`)."""
from __future__ import annotations

from typing import Any, Mapping


def apply_preset(data: Any, presets: Mapping[str, Mapping[str, Any]], section: str) -> Any:
    """Fill a section's raw input from its `preset` entry; fields given explicitly win.

    For a pydantic model_validator(mode="before"); raises ValueError for an unknown preset.
    """
    if not isinstance(data, dict) or data.get("preset") is None:
        return data
    name = data["preset"]
    if name not in presets:
        raise ValueError(f"{section}.preset: unknown preset {name!r}; use one of {sorted(presets)} "
                         "or remove the key to use the defaults")
    return {**presets[name], **data}
