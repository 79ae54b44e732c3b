"""Sensor normalization: npho / time transforms, their inverses and validity masks.

`NormalizationConfig` is the schema section `normalization`. The functions work on
numpy arrays and torch tensors of any leading shape (the output type follows the
input type). Validity is explicit: `normalize` returns boolean masks next to the
normalized values, and invalid entries hold the configured sentinels only so that
the tensor is finite; never test a value against a sentinel to find invalid sensors.
"""
from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

NPHO_SCHEMES = ("log1p", "sqrt", "anscombe", "linear")
# Raw npho / time with a magnitude above this mark a missing readout in the input files.
RAW_MISSING_ABOVE = 9e9
_ANSCOMBE_OFFSET = 3.0 / 8.0

Array = Union[np.ndarray, torch.Tensor]
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

    model_config = ConfigDict(extra="forbid", frozen=True)

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
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        name = data["preset"]
        if name not in PRESETS:
            raise ValueError(
                f"normalization.preset: unknown preset {name!r}; use one of {sorted(PRESETS)} "
                "or remove the key to use the defaults"
            )
        return {**PRESETS[name], **data}

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> NormalizationConfig:
        """Config of the named preset, with `overrides` replacing its fields."""
        return cls(preset=name, **overrides)


# ---------------------------------------------------------------- array helpers


def _is_torch(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def _as_float(x: Any) -> Array:
    """Input as a floating numpy array / torch tensor (integers become float32)."""
    if _is_torch(x):
        return x if x.is_floating_point() else x.to(torch.float32)
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float32)


def _xp(x: Array):
    """The array namespace (numpy or torch) that matches `x`."""
    return torch if _is_torch(x) else np


def _where(cond: Array, a: Array, fill: float) -> Array:
    if _is_torch(a):
        return torch.where(cond, a, torch.tensor(fill, dtype=a.dtype, device=a.device))
    return np.where(cond, a, np.asarray(fill, dtype=a.dtype))


def _to_dtype(x: Array, bits: int) -> Array:
    if _is_torch(x):
        return x.to(torch.float64 if bits == 64 else torch.float32)
    return x.astype(np.float64 if bits == 64 else np.float32, copy=False)


def _finite_or_zero(x: Array) -> tuple[Array, Array]:
    """(isfinite mask, x with non-finite entries replaced by 0)."""
    finite = _xp(x).isfinite(x)
    return finite, _where(finite, x, 0.0)


# ---------------------------------------------------------------- transforms


def npho_forward(x: Any, cfg: NormalizationConfig) -> Array:
    """Normalized npho for raw npho `x` (entries must lie in the scheme's domain)."""
    x = _as_float(x)
    xp, s1 = _xp(x), cfg.npho_scale
    if cfg.npho_scheme == "log1p":
        return xp.log1p(x / s1) / cfg.npho_scale2
    if cfg.npho_scheme == "sqrt":
        return xp.sqrt(x) / math.sqrt(s1)
    if cfg.npho_scheme == "anscombe":
        return xp.sqrt(x + _ANSCOMBE_OFFSET) / math.sqrt(s1 + _ANSCOMBE_OFFSET)
    return x / s1


def npho_inverse(y: Any, cfg: NormalizationConfig) -> Array:
    """Raw npho for normalized npho `y`; exact inverse of `npho_forward`."""
    y = _as_float(y)
    xp, s1 = _xp(y), cfg.npho_scale
    if cfg.npho_scheme == "log1p":
        return s1 * xp.expm1(y * cfg.npho_scale2)
    if cfg.npho_scheme == "sqrt":
        return y * y * s1
    if cfg.npho_scheme == "anscombe":
        return y * y * (s1 + _ANSCOMBE_OFFSET) - _ANSCOMBE_OFFSET
    return y * s1


def npho_domain_min(cfg: NormalizationConfig) -> tuple[float, bool]:
    """(minimum, inclusive) of the raw npho the scheme accepts; linear has none (-inf)."""
    if cfg.npho_scheme == "log1p":
        return -cfg.npho_scale, False
    if cfg.npho_scheme == "sqrt":
        return 0.0, True
    if cfg.npho_scheme == "anscombe":
        return -_ANSCOMBE_OFFSET, False
    return -math.inf, False


def time_forward(t: Any, cfg: NormalizationConfig) -> Array:
    """Normalized time `t / time_scale - time_shift` for raw time `t` in seconds."""
    return _as_float(t) / cfg.time_scale - cfg.time_shift


def time_inverse(y: Any, cfg: NormalizationConfig) -> Array:
    """Raw time in seconds for normalized time `y`; exact inverse of `time_forward`."""
    return (_as_float(y) + cfg.time_shift) * cfg.time_scale


# ---------------------------------------------------------------- validity and full pipeline


def _check_pair(npho: Any, time: Any) -> tuple[Array, Array]:
    """Validated float64 (npho, time): computing in float64 and rounding once to float32
    keeps numpy and torch results bit-identical."""
    npho, time = _as_float(npho), _as_float(time)
    if _is_torch(npho) != _is_torch(time):
        raise TypeError(
            f"npho is a {type(npho).__name__} but time is a {type(time).__name__}; "
            "pass both as numpy arrays or both as torch tensors"
        )
    if tuple(npho.shape) != tuple(time.shape):
        raise ValueError(
            f"npho shape {tuple(npho.shape)} != time shape {tuple(time.shape)}; "
            "pass one time per sensor"
        )
    return _to_dtype(npho, 64), _to_dtype(time, 64)


def _npho_valid_and_safe(npho: Array, cfg: NormalizationConfig) -> tuple[Array, Array]:
    """(npho_valid, npho with invalid entries replaced by 0, which every scheme accepts)."""
    finite, safe = _finite_or_zero(npho)
    minimum, inclusive = npho_domain_min(cfg)
    in_domain = safe >= minimum if inclusive else safe > minimum
    valid = finite & (safe <= RAW_MISSING_ABOVE) & in_domain
    return valid, _where(valid, safe, 0.0)


def _time_valid_and_safe(
    npho_safe: Array, time: Array, npho_valid: Array, cfg: NormalizationConfig
) -> tuple[Array, Array]:
    """(time_valid, time with invalid entries replaced by 0)."""
    finite, safe = _finite_or_zero(time)
    valid = (
        npho_valid
        & (npho_safe >= cfg.npho_threshold)
        & finite
        & (_xp(safe).abs(safe) <= RAW_MISSING_ABOVE)
    )
    return valid, _where(valid, safe, 0.0)


def validity_masks(npho: Any, time: Any, cfg: NormalizationConfig) -> tuple[Array, Array]:
    """Boolean (npho_valid, time_valid) per sensor for raw npho and time.

    npho is invalid when > RAW_MISSING_ABOVE, NaN/inf or outside the scheme's domain;
    time is invalid when npho is invalid, raw npho < npho_threshold, |t| > RAW_MISSING_ABOVE
    or t is NaN/inf.
    """
    npho, time = _check_pair(npho, time)
    npho_valid, npho_safe = _npho_valid_and_safe(npho, cfg)
    time_valid, _ = _time_valid_and_safe(npho_safe, time, npho_valid, cfg)
    return npho_valid, time_valid


def normalize(npho: Any, time: Any, cfg: NormalizationConfig) -> tuple[Array, Array, Array]:
    """Normalize raw npho and time of shape (...) into x of shape (..., 2), float32.

    Returns (x, npho_valid, time_valid): x[..., 0] is the normalized npho, x[..., 1] the
    normalized time, with npho_sentinel / time_sentinel where the mask is false.
    """
    npho, time = _check_pair(npho, time)
    npho_valid, npho_safe = _npho_valid_and_safe(npho, cfg)
    time_valid, time_safe = _time_valid_and_safe(npho_safe, time, npho_valid, cfg)
    npho_norm = _where(npho_valid, npho_forward(npho_safe, cfg), cfg.npho_sentinel)
    time_norm = _where(time_valid, time_forward(time_safe, cfg), cfg.time_sentinel)
    x = _xp(npho).stack([_to_dtype(npho_norm, 32), _to_dtype(time_norm, 32)], -1)
    return x, npho_valid, time_valid


def denormalize(x: Any, cfg: NormalizationConfig) -> tuple[Array, Array]:
    """(raw npho, raw time) from x of shape (..., 2); only entries valid in the masks mean anything."""
    x = _as_float(x)
    if x.ndim == 0 or x.shape[-1] != 2:
        raise ValueError(f"denormalize expects shape (..., 2) (npho, time), got {tuple(x.shape)}")
    return npho_inverse(x[..., 0], cfg), time_inverse(x[..., 1], cfg)


# ---------------------------------------------------------------- metadata


def describe(cfg: NormalizationConfig) -> dict[str, Any]:
    """Plain dict of the config; `NormalizationConfig(**describe(cfg)) == cfg`."""
    return cfg.model_dump(mode="json")


def check_compatible(a: NormalizationConfig, b: NormalizationConfig) -> list[str]:
    """Names of the parameter fields that differ between `a` and `b` (empty if equivalent).

    `preset` is only a label for the values it filled in, so it is not compared.
    """
    return [
        name
        for name in NormalizationConfig.model_fields
        if name != "preset" and getattr(a, name) != getattr(b, name)
    ]
