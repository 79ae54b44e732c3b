"""Torch gathers and scatters between the flat (B, 4760, C) layout and per-face grids / hex rows.

Index tensors are cached per device; torch is imported on the first call.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from lib.geometry.sensors import FACE_NAMES, GRID_SHAPES, N_HEX, N_SENSORS, _face_code, face_ids, grid_ids, hex_ids

if TYPE_CHECKING:
    import torch

# --- torch gathers / scatters -------------------------------------------------
_ONE_TO_ONE_GRIDS = ("inner", "outer_coarse", "outer_dense", "us", "ds")


@functools.lru_cache(maxsize=None)
def _index(key: str, device: torch.device) -> torch.Tensor:
    import torch

    kind, _, name = key.partition(":")
    if kind == "grid":
        array = grid_ids(name).ravel()
    elif kind == "hex":
        array = hex_ids(name)
    elif kind == "face":
        array = face_ids(name)
    else:
        raise KeyError(key)
    return torch.as_tensor(np.array(array), device=device)  # copy: constants are read-only


def face_index(face: str | int, device: torch.device | str | None = None) -> torch.Tensor:
    """face_ids(face) as a cached int64 tensor on `device` (index torch tensors with this, not the numpy array)."""
    import torch

    return _index("face:" + FACE_NAMES[_face_code(face)], torch.device(device or "cpu"))


def _check_flat(x: torch.Tensor, what: str, ndim: int) -> None:
    if x.ndim != ndim or x.shape[1] != N_SENSORS:
        expected = "(B, 4760, C)" if ndim == 3 else "(B, 4760)"
        raise ValueError(f"{what} must have shape {expected}, got {tuple(x.shape)}")


def _one_to_one_grid(name: str) -> str:
    if name not in _ONE_TO_ONE_GRIDS:
        raise ValueError(f"grid {name!r} is not a one-sensor-per-cell grid {_ONE_TO_ONE_GRIDS}")
    return name


def flat_to_grid(x: torch.Tensor, name: str) -> torch.Tensor:
    """Gather (B, 4760, C) into (B, C, H, W) for "inner", "outer_coarse", "outer_dense", "us", "ds"."""
    _check_flat(x, "x", 3)
    ids = _index("grid:" + _one_to_one_grid(name), x.device)
    height, width = GRID_SHAPES[name]
    return x.index_select(1, ids).transpose(1, 2).reshape(x.shape[0], x.shape[2], height, width)


def grid_to_flat(grid: torch.Tensor, name: str, out: torch.Tensor) -> torch.Tensor:
    """Scatter (B, C, H, W) into out (B, 4760, C) at that grid's ids (in place); returns out."""
    _check_flat(out, "out", 3)
    ids = _index("grid:" + _one_to_one_grid(name), out.device)
    if tuple(grid.shape[2:]) != GRID_SHAPES[name]:
        raise ValueError(f"grid for {name!r} must be (B, C, {GRID_SHAPES[name]}), got {tuple(grid.shape)}")
    out[:, ids] = grid.flatten(2).transpose(1, 2).to(out.dtype)
    return out


def mask_to_grid(mask: torch.Tensor, name: str) -> torch.Tensor:
    """Gather a (B, 4760) mask into (B, H, W) for a one-sensor-per-cell grid."""
    _check_flat(mask, "mask", 2)
    ids = _index("grid:" + _one_to_one_grid(name), mask.device)
    return mask.index_select(1, ids).reshape(mask.shape[0], *GRID_SHAPES[name])


def flat_to_hex(x: torch.Tensor, face: str | int) -> torch.Tensor:
    """Gather (B, 4760, C) into (B, 73, C) for the "top" or "bottom" face."""
    _check_flat(x, "x", 3)
    return x.index_select(1, _index("hex:" + FACE_NAMES[_face_code(face)], x.device))


def hex_to_flat(h: torch.Tensor, face: str | int, out: torch.Tensor) -> torch.Tensor:
    """Scatter (B, 73, C) into out (B, 4760, C) at the hex face's ids (in place); returns out."""
    _check_flat(out, "out", 3)
    if h.ndim != 3 or h.shape[1] != N_HEX:
        raise ValueError(f"h must have shape (B, {N_HEX}, C), got {tuple(h.shape)}")
    out[:, _index("hex:" + FACE_NAMES[_face_code(face)], out.device)] = h.to(out.dtype)
    return out


def mask_to_hex(mask: torch.Tensor, face: str | int) -> torch.Tensor:
    """Gather a (B, 4760) mask into (B, 73)."""
    _check_flat(mask, "mask", 2)
    return mask.index_select(1, _index("hex:" + FACE_NAMES[_face_code(face)], mask.device))
