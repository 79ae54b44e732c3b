"""Sensor normalization: npho / time transforms, their inverses, validity masks and time-loss weights.

The parameters are the config section `normalization` (lib.config.NormalizationConfig). The functions work on
numpy arrays and torch tensors of any leading shape (the output type follows the
input type). torch is imported only when a tensor is passed, so the config
section loads without it. Validity is explicit: `normalize` returns boolean masks next to the
normalized values, and invalid entries hold the configured sentinels only so that
the tensor is finite; never test a value against a sentinel to find invalid sensors.
"""
from __future__ import annotations

import functools
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Union

import numpy as np

from lib.config.normalization_schema import NormalizationConfig

NPHO_SCHEMES = ("log1p", "sqrt", "anscombe", "linear")
CHANNEL_INDEX = {"npho": 0, "time": 1}
"""Channel of each quantity in the normalized input x (..., 2) and in model predictions."""
# Raw npho / time with a magnitude above this mark a missing readout in the input files.
RAW_MISSING_ABOVE = 9e9
_ANSCOMBE_OFFSET = 3.0 / 8.0

if TYPE_CHECKING:
    import torch

Array = Union[np.ndarray, "torch.Tensor"]

# ---------------------------------------------------------------- array helpers


def _torch():
    """The torch module; only called for tensor inputs, so torch is already imported then."""
    return sys.modules["torch"]


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")  # no torch imported: x cannot be a tensor
    return torch is not None and isinstance(x, torch.Tensor)


def _as_float(x: Any) -> Array:
    """Input as a float32 / float64 numpy array or torch tensor (any other dtype becomes float32)."""
    if _is_torch(x):
        torch = _torch()
        return x if x.dtype in (torch.float32, torch.float64) else x.to(torch.float32)
    x = np.asarray(x)
    return x if x.dtype in (np.float32, np.float64) else x.astype(np.float32)


def _xp(x: Array):
    """The array namespace (numpy or torch) that matches `x`."""
    return _torch() if _is_torch(x) else np


def _empty(like: Array, shape: tuple[int, ...], dtype: str) -> Array:
    """Uninitialized array of `shape` and `dtype` ("float32", "bool") of like's kind and device."""
    if _is_torch(like):
        torch = _torch()
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    return np.empty(shape, dtype=dtype)


@functools.lru_cache(maxsize=64)
def _float32_bound(c: float, rounding: Literal["down", "up"]) -> float:
    """`c` rounded down / up to the nearest float32 value (exactly representable as float)."""
    with np.errstate(over="ignore"):
        bound = np.float32(c)
    if rounding == "down" and float(bound) > c:  # compared in float64: numpy would round c to float32
        bound = np.nextafter(bound, np.float32(-np.inf))
    elif rounding == "up" and float(bound) < c:
        bound = np.nextafter(bound, np.float32(np.inf))
    return float(bound)


def _bound_for(x: Array, c: float, rounding: Literal["down", "up"]) -> float:
    """`c` in x's precision such that `x <= bound` / `x > bound` (rounding down) or
    `x >= bound` (rounding up) answers exactly as comparing float64(x) with `c`."""
    if x.dtype == (_torch().float64 if _is_torch(x) else np.float64):
        return c
    return _float32_bound(c, rounding)


# ---------------------------------------------------------------- transforms


def npho_forward(x: Any, cfg: NormalizationConfig, out: Array | None = None) -> Array:
    """Normalized npho for raw npho `x` (entries must lie in the scheme's domain), written
    into `out` (an array of x's shape, kind and float dtype) if given."""
    x = _as_float(x)
    xp, s1 = _xp(x), cfg.npho_scale
    if cfg.npho_scheme == "log1p":
        y = xp.divide(x, s1, out=out)
        return xp.divide(xp.log1p(y, out=y), cfg.npho_scale2, out=y)
    if cfg.npho_scheme == "sqrt":
        y = xp.sqrt(x, out=out)
        return xp.divide(y, math.sqrt(s1), out=y)
    if cfg.npho_scheme == "anscombe":
        y = xp.add(x, _ANSCOMBE_OFFSET, out=out)
        return xp.divide(xp.sqrt(y, out=y), math.sqrt(s1 + _ANSCOMBE_OFFSET), out=y)
    return xp.divide(x, s1, out=out)


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
    """npho and time as float arrays of one kind (numpy / torch) and the same shape."""
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
    return npho, time


def _masks_into(npho: Array, time: Array, cfg: NormalizationConfig, npho_valid: Array, time_valid: Array) -> None:
    """Write the masks of float npho and time (see `validity_masks`) into the bool arrays given.
    Every comparison is false for NaN and the bounds exclude +-inf, so no finiteness test is needed."""
    xp = _xp(npho)
    minimum, inclusive = npho_domain_min(cfg)
    xp.less_equal(npho, _bound_for(npho, RAW_MISSING_ABOVE, "down"), out=npho_valid)
    npho_valid &= (npho >= _bound_for(npho, minimum, "up")) if inclusive else (npho > _bound_for(npho, minimum, "down"))
    xp.greater_equal(npho, _bound_for(npho, cfg.npho_threshold, "up"), out=time_valid)
    time_valid &= npho_valid
    time_valid &= xp.abs(time) <= _bound_for(time, RAW_MISSING_ABOVE, "down")


def validity_masks(npho: Any, time: Any, cfg: NormalizationConfig) -> tuple[Array, Array]:
    """Boolean (npho_valid, time_valid) per sensor for raw npho and time.

    npho is invalid when > RAW_MISSING_ABOVE, NaN/inf or outside the scheme's domain;
    time is invalid when npho is invalid, raw npho < npho_threshold, |t| > RAW_MISSING_ABOVE
    or t is NaN/inf. float32 input is judged exactly as its float64 value would be.
    """
    npho, time = _check_pair(npho, time)
    npho_valid, time_valid = _empty(npho, tuple(npho.shape), "bool"), _empty(npho, tuple(npho.shape), "bool")
    _masks_into(npho, time, cfg, npho_valid, time_valid)
    return npho_valid, time_valid


# Elements normalized per step: the temporaries of one step stay in the CPU cache.
_BLOCK = 1 << 18


def normalize(
    npho: Any, time: Any, cfg: NormalizationConfig, out: tuple[Array, Array, Array] | None = None
) -> tuple[Array, Array, Array]:
    """Normalize raw npho and time of shape (...) into x of shape (..., 2), float32.

    Returns (x, npho_valid, time_valid): x[..., 0] is the normalized npho, x[..., 1] the
    normalized time, with npho_sentinel / time_sentinel where the mask is false.
    float32 input is transformed in float32 (float64 input in float64, rounded once).
    `out`: contiguous (x, npho_valid, time_valid) arrays to fill instead of new ones.
    """
    npho, time = _check_pair(npho, time)
    shape = tuple(npho.shape)
    if out is None:
        out = (_empty(npho, (*shape, 2), "float32"), _empty(npho, shape, "bool"), _empty(npho, shape, "bool"))
    _check_out(out, npho, shape)
    x, npho_valid, time_valid = out
    flat_npho, flat_time = npho.reshape(-1), time.reshape(-1)
    flat_x, flat_npho_valid, flat_time_valid = x.reshape(-1, 2), npho_valid.reshape(-1), time_valid.reshape(-1)
    normalize_flat = _normalize_generic if _is_torch(npho) else _normalize_compiled
    normalize_flat(flat_npho, flat_time, cfg, flat_x, flat_npho_valid, flat_time_valid)
    return x, npho_valid, time_valid


def _blocks(n: int) -> list[slice]:
    return [slice(lo, min(lo + _BLOCK, n)) for lo in range(0, n, _BLOCK)]


def _normalize_generic(npho: Array, time: Array, cfg: NormalizationConfig, x: Array, npho_valid: Array,
                       time_valid: Array) -> None:  # fmt: skip
    """`normalize` of flat inputs into x of shape (n, 2) with array operations (torch)."""
    for part in _blocks(npho.shape[0]):
        n, t, n_valid, t_valid = npho[part], time[part], npho_valid[part], time_valid[part]
        _masks_into(n, t, cfg, n_valid, t_valid)
        with np.errstate(all="ignore"):  # invalid entries may give NaN / inf here; the sentinels replace them
            _select_into(x[part, 0], n_valid, npho_forward(n, cfg), cfg.npho_sentinel)
            _select_into(x[part, 1], t_valid, time_forward(t, cfg), cfg.time_sentinel)


def _normalize_compiled(npho: np.ndarray, time: np.ndarray, cfg: NormalizationConfig, x: np.ndarray,
                        npho_valid: np.ndarray, time_valid: np.ndarray) -> None:  # fmt: skip
    """`_normalize_generic` for numpy arrays, with the same result: `normalize_rows` of each
    block as one row (the compiled kernel: one pass instead of about fifteen)."""
    scratch = np.empty((1, min(_BLOCK, npho.shape[0])), npho.dtype)
    flat_x, one_row = x.reshape(1, -1), np.zeros(1, np.int64)
    for part in _blocks(npho.shape[0]):
        size = part.stop - part.start
        outputs = (flat_x[:, 2 * part.start : 2 * part.stop], npho_valid[None, part], time_valid[None, part])
        normalize_rows(npho[None, part], time[None, part], cfg, [(one_row, one_row, outputs)], scratch[:, :size])


def _kernel_parameters(npho: np.ndarray, time: np.ndarray, cfg: NormalizationConfig) -> tuple:
    """The bounds, time transform and sentinels `fill_rows` takes, in the inputs' precision."""
    minimum, inclusive = npho_domain_min(cfg)
    npho_type, time_type = npho.dtype.type, time.dtype.type
    return (
        npho_type(_bound_for(npho, RAW_MISSING_ABOVE, "down")),
        npho_type(_bound_for(npho, minimum, "up" if inclusive else "down")), inclusive,
        npho_type(_bound_for(npho, cfg.npho_threshold, "up")),
        time_type(_bound_for(time, RAW_MISSING_ABOVE, "down")),
        time_type(cfg.time_scale), time_type(cfg.time_shift),
        np.float32(cfg.npho_sentinel), np.float32(cfg.time_sentinel),
    )  # fmt: skip


def normalize_rows(
    npho: np.ndarray,
    time: np.ndarray,
    cfg: NormalizationConfig,
    targets: Sequence[tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]],
    scratch: np.ndarray | None = None,
) -> None:
    """`normalize` of rows of raw numpy npho / time (events, sensors), written straight into
    rows of other arrays: for each (src, dst, (x, npho_valid, time_valid[, time_weight])) of
    `targets`, event src[k] goes to row dst[k] of those (C-contiguous) arrays; a float32
    time_weight gets `time_loss_weight` of the event. `scratch`: a float array of npho's
    shape for the npho transform (else one is allocated)."""
    from lib.normalization.kernel import fill_rows, fill_time_weights

    with np.errstate(all="ignore"):  # invalid entries may give NaN / inf here; the sentinels replace them
        values = npho_forward(npho, cfg, out=scratch)
    parameters = _kernel_parameters(npho, time, cfg)
    for src, dst, (x, npho_valid, time_valid, *time_weight) in targets:
        fill_rows(npho, time, values, src, dst, *parameters, x.reshape(len(x), -1), npho_valid, time_valid)
        if time_weight:
            fill_time_weights(npho, src, dst, time_valid, time_weight[0])


def time_loss_weight(npho: Any, time_valid: Any) -> Array:
    """Per-sensor weight of the time loss (training.time.use_npho_weight) for raw `npho` and the
    `time_valid` mask of `normalize`: float32 sqrt(max(npho, 0)) where time is valid, else 0.
    Computed from the raw values, before anything is normalized (no inverse needed later)."""
    npho = _as_float(npho)
    if _is_torch(npho):
        return _torch().where(time_valid, npho.clamp_min(0.0).sqrt(), 0.0).float()
    with np.errstate(all="ignore"):  # NaN / inf only where time is invalid
        return np.where(time_valid, np.sqrt(np.maximum(npho, 0)), 0.0).astype(np.float32)


def _check_out(out: tuple[Array, Array, Array], like: Array, shape: tuple[int, ...]) -> None:
    """`out` must be contiguous float32 (..., 2) / bool / bool arrays of like's kind and shape."""
    want = [((*shape, 2), "float32"), (shape, "bool"), (shape, "bool")]
    for name, array, (want_shape, want_dtype) in zip(("x", "npho_valid", "time_valid"), out, want):
        contiguous = array.is_contiguous() if _is_torch(array) else array.flags.c_contiguous
        if (
            _is_torch(array) != _is_torch(like)
            or tuple(array.shape) != want_shape
            or str(array.dtype).removeprefix("torch.") != want_dtype
            or not contiguous
        ):
            raise ValueError(
                f"normalize: out {name} must be a contiguous {want_dtype} {type(like).__name__} of shape "
                f"{want_shape}, got a {type(array).__name__} {array.dtype} of shape {tuple(array.shape)}"
            )


def _select_into(out: Array, valid: Array, values: Array, fill: float) -> None:
    """out[...] = values where valid, else fill. With few invalid entries (the usual case
    for npho) copying and then patching is cheaper than a full select."""
    n_invalid = valid.shape[0] - int(_xp(valid).count_nonzero(valid))
    if 8 * n_invalid < valid.shape[0]:
        out[...] = values
        out[~valid] = fill
    else:
        out[...] = _xp(values).where(valid, values, fill)


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
