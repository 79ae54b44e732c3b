"""Sensor normalization: transforms, inverses, validity masks, time-loss weights and the compiled kernel
(see transforms)."""
from __future__ import annotations

from lib.config.normalization_schema import NormalizationConfig
from lib.normalization.transforms import (
    CHANNEL_INDEX, NPHO_SCHEMES, RAW_MISSING_ABOVE, check_compatible, describe, normalize, normalize_rows,
    npho_domain_min, npho_forward, npho_inverse, time_forward, time_inverse, time_loss_weight, validity_masks,
)

__all__ = [
    "CHANNEL_INDEX", "NPHO_SCHEMES", "RAW_MISSING_ABOVE", "NormalizationConfig", "check_compatible", "describe",
    "normalize", "normalize_rows", "npho_domain_min", "npho_forward", "npho_inverse", "time_forward", "time_inverse",
    "time_loss_weight", "validity_masks",
]
