"""Sensor normalization: npho / time transforms, their inverses and validity masks.

(Contract stub: the NormalizationConfig below is the schema section `normalization`;
the transform functions are filled in by the normalization work.)
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class NormalizationConfig(BaseModel):
    """Parameters of the input normalization (config section `normalization`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    npho_scheme: Literal["log1p", "sqrt", "anscombe", "linear"] = "log1p"
    npho_scale: float = 1000.0  # s1
    npho_scale2: float = 4.08  # s2 (log1p only)
    time_scale: float = 1.14e-7  # ts, seconds
    time_shift: float = -0.46
    npho_sentinel: float = -1.0
    time_sentinel: float = -1.0
    npho_threshold: float = 100.0
