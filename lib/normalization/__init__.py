"""Sensor normalization: transforms, inverses, validity masks and the compiled kernel (see transforms)."""
from __future__ import annotations

from lib.config.normalization_schema import NormalizationConfig
from lib.normalization.transforms import (
    CHANNEL_INDEX, NPHO_SCHEMES, RAW_MISSING_ABOVE, check_compatible, denormalize, describe, normalize,
    normalize_rows, npho_domain_min, npho_forward, npho_inverse, time_forward, time_inverse, validity_masks,
)

__all__ = [
    "CHANNEL_INDEX", "NPHO_SCHEMES", "RAW_MISSING_ABOVE", "NormalizationConfig", "check_compatible", "denormalize",
    "describe", "normalize", "normalize_rows", "npho_domain_min", "npho_forward", "npho_inverse", "time_forward",
    "time_inverse", "validity_masks",
]
