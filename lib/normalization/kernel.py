"""Compiled (numba) validity masks, sentinels, interleaving and time-loss weights behind
`lib.normalization.normalize` / `normalize_rows` for numpy arrays.

Done with numpy ufuncs this takes about fifteen passes over the data, several of them
strided writes into the interleaved x, and a Python call (which waits for the GIL while
uproot reads in another thread) between each. This kernel does it in one pass without the
GIL; the npho transforms stay in `lib.normalization` (numpy's vectorised log1p).
It gives exactly the result of the generic path (tests/normalization/test_transforms.py compares them).
Imported on first use only, so configs load without numba.
"""
from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(nogil=True, cache=True, boundscheck=False)
def fill_rows(
    npho: np.ndarray,
    time: np.ndarray,
    npho_values: np.ndarray,
    src: np.ndarray,
    dst: np.ndarray,
    npho_high: float,
    npho_low: float,
    low_inclusive: bool,
    threshold: float,
    time_high: float,
    time_scale: float,
    time_shift: float,
    npho_sentinel: float,
    time_sentinel: float,
    x: np.ndarray,
    npho_valid: np.ndarray,
    time_valid: np.ndarray,
) -> None:
    """Row src[k] of raw `npho`, `time` and the npho transform `npho_values` (rows of
    sensors) into row dst[k] of x (rows of 2 values per sensor), npho_valid and time_valid.

    npho_valid = low < npho (or == with `low_inclusive`) <= high; time_valid = npho_valid,
    npho >= threshold and |time| <= time_high (NaN fails every test); x = (npho transform,
    time / time_scale - time_shift as in `lib.normalization.time_forward`) where valid,
    else the sentinel. Reads the inputs once; computing the time here saves a pass over memory.
    """
    for k in range(src.shape[0]):
        i, d = src[k], dst[k]
        raw_npho, raw_time, values = npho[i], time[i], npho_values[i]
        x_row, npho_valid_row, time_valid_row = x[d], npho_valid[d], time_valid[d]
        for j in range(raw_npho.shape[0]):
            a = raw_npho[j]
            t = raw_time[j]
            ok_npho = (a <= npho_high) & ((a > npho_low) | (low_inclusive & (a == npho_low)))
            ok_time = ok_npho & (a >= threshold) & (abs(t) <= time_high)
            npho_valid_row[j] = ok_npho
            time_valid_row[j] = ok_time
            x_row[2 * j] = values[j] if ok_npho else npho_sentinel
            x_row[2 * j + 1] = t / time_scale - time_shift if ok_time else time_sentinel


@numba.njit(nogil=True, cache=True, boundscheck=False)
def fill_time_weights(npho: np.ndarray, src: np.ndarray, dst: np.ndarray, time_valid: np.ndarray,
                      time_weight: np.ndarray) -> None:
    """Row dst[k] of time_weight = sqrt(max(npho, 0)) of raw row src[k] where row dst[k] of
    time_valid (as `fill_rows` wrote it) holds, else 0; as `lib.normalization.time_loss_weight`.
    A kernel of its own: written as a second loop inside `fill_rows`, it made `fill_rows` about
    14 times slower even without weights (0.7 -> 9.4 ms per 256 demo events)."""
    for k in range(src.shape[0]):
        raw_npho, valid, weight = npho[src[k]], time_valid[dst[k]], time_weight[dst[k]]
        for j in range(raw_npho.shape[0]):
            weight[j] = math.sqrt(max(raw_npho[j], 0.0)) if valid[j] else 0.0
