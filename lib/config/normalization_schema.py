"""Typed config of the input normalization (config section `normalization`); the transforms
that use it live in lib.normalization."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from lib.config.presets import apply_preset

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

# Named parameter sets; "new" is the class defaults, so it overrides nothing.
PRESETS: dict[str, dict[str, float]] = {
    "new": {},
    "legacy": {"npho_scale": 0.58, "npho_scale2": 1.0, "time_scale": 6.5e-8, "time_shift": 0.5},
}


class NormalizationConfig(BaseModel):
    """Parameters of the input normalization (config section `normalization`).

    `preset` selects a named parameter set (see `PRESETS`); fields given explicitly
    next to it win over the preset's values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    preset: Literal["new", "legacy"] | None = None
    npho_scheme: Literal["log1p", "sqrt", "anscombe", "linear"] = "log1p"
    npho_scale: PositiveFloat = 1000.0  # s1
    npho_scale2: PositiveFloat = 4.08  # s2 (log1p only)
    time_scale: PositiveFloat = 1.14e-7  # ts, seconds
    time_shift: FiniteFloat = -0.46
    npho_sentinel: FiniteFloat = -1.0
    time_sentinel: FiniteFloat = -1.0
    npho_threshold: FiniteFloat = 100.0

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        return apply_preset(data, PRESETS, "normalization")

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> NormalizationConfig:
        """Config of the named preset, with `overrides` replacing its fields."""
        return cls(preset=name, **overrides)
