"""Torch gathers and scatters between the flat (B, 4760, C) layout and per-face grids / hex rows.

Index tensors are cached per device; torch is imported on the first call.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

from lib.geometry.sensors import (
    _GRID_IDS, FACE_NAMES, FACE_OUTER, GRID_SHAPES, N_HEX, N_SENSORS, OUTER_FINE_CELL_COUNT, _face_code, face_ids,
    grid_ids, hex_ids,
)

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
    elif kind == "fine_local":  # position of each fine cell's sensor within face_ids("outer")
        array = np.searchsorted(face_ids(FACE_OUTER), _GRID_IDS["outer_fine"].ravel())
    elif kind == "fine_count":
        array = OUTER_FINE_CELL_COUNT[_GRID_IDS["outer_fine"].ravel()]
    elif kind == "outer_count":
        array = OUTER_FINE_CELL_COUNT[face_ids(FACE_OUTER)]
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
        hint = "; use flat_to_outer_fine for 'outer_fine'" if name == "outer_fine" else ""
        raise ValueError(f"grid {name!r} is not a one-sensor-per-cell grid {_ONE_TO_ONE_GRIDS}{hint}")
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


def _extensive_mask(extensive_channels, n_channels: int, device: torch.device) -> torch.Tensor:
    import torch

    channels = list(extensive_channels)
    if any(not 0 <= c < n_channels for c in channels):
        raise ValueError(f"extensive_channels {tuple(channels)} out of range for {n_channels} channels")
    flags = torch.zeros(n_channels, dtype=torch.bool, device=device)
    flags[channels] = True
    return flags


def flat_to_outer_fine(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    extensive_channels=(0,),
    pool: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Outer face on the fine grid: (B, C, 72, 45) and fine mask (B, 72, 45), or pooled by `pool`.

    Extensive channels are divided by the fine-cell count of the shown sensor; the
    fine mask is the mask of the shown sensor. Pooling averages extensive channels
    plainly and the others over valid cells only (0 where none); pooled mask = any valid.
    """
    import torch
    import torch.nn.functional as F

    _check_flat(x, "x", 3)
    batch, n_channels = x.shape[0], x.shape[2]
    height, width = GRID_SHAPES["outer_fine"]
    extensive = _extensive_mask(extensive_channels, n_channels, x.device)
    values = x.index_select(1, _index("grid:outer_fine", x.device))
    counts = _index("fine_count", x.device).to(x.dtype)[None, :, None]
    values = torch.where(extensive, values / counts, values)
    fine = values.transpose(1, 2).reshape(batch, n_channels, height, width)
    fine_mask = None
    if mask is not None:
        _check_flat(mask, "mask", 2)
        fine_mask = mask.index_select(1, _index("grid:outer_fine", mask.device)).reshape(batch, height, width)
    if pool is None:
        return fine, fine_mask
    if len(pool) != 2 or height % pool[0] or width % pool[1]:
        raise ValueError(f"pool {pool} must be (p_phi, p_z) dividing the fine shape {(height, width)}")
    pool = (int(pool[0]), int(pool[1]))
    plain_mean = F.avg_pool2d(fine, pool)
    if fine_mask is None:
        return plain_mean, None
    valid = fine_mask.unsqueeze(1)
    valid_fraction = F.avg_pool2d(valid.to(fine.dtype), pool)
    masked_sum = F.avg_pool2d(torch.where(valid, fine, torch.zeros_like(fine)), pool)
    has_valid = valid_fraction > 0
    masked_mean = torch.where(has_valid, masked_sum / valid_fraction.clamp_min(1e-6), torch.zeros_like(masked_sum))
    pooled = torch.where(extensive[None, :, None, None], plain_mean, masked_mean)
    return pooled, has_valid[:, 0]


def outer_fine_to_flat(fine: torch.Tensor, out: torch.Tensor, extensive_channels=(0,)) -> torch.Tensor:
    """Inverse of the unpooled fine map into out (in place): extensive = sum over cells, else mean."""
    import torch

    _check_flat(out, "out", 3)
    height, width = GRID_SHAPES["outer_fine"]
    if fine.ndim != 4 or tuple(fine.shape[2:]) != (height, width):
        raise ValueError(f"fine must have shape (B, C, {height}, {width}), got {tuple(fine.shape)}")
    batch, n_channels = fine.shape[:2]
    extensive = _extensive_mask(extensive_channels, n_channels, fine.device)
    outer_ids = face_index(FACE_OUTER, fine.device)
    values = fine.flatten(2).transpose(1, 2)
    sums = values.new_zeros(batch, len(outer_ids), n_channels).index_add_(1, _index("fine_local", fine.device), values)
    counts = _index("outer_count", fine.device).to(fine.dtype)[None, :, None]
    out[:, outer_ids] = torch.where(extensive, sums, sums / counts).to(out.dtype)
    return out
