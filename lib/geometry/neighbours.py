"""Same-face neighbours of every sensor: the grid / hex adjacency the inpainting baselines average over.

Two sensors are neighbours when they lie on the same face and their cells touch (sides or corners):
- inner, US, DS: the 8 surrounding cells of the rectangular grid (fewer at the edges);
- outer: cells of the "outer_fine" grid, where every sensor sits at its physical place, so a coarse PMT
  touches its coarse neighbours and the dense-patch PMTs along its border, and a patch PMT touches the
  patch PMTs around it and the coarse PMTs along the patch's edge;
- top, bottom: the hex graph (HEX_NEIGHBORS, up to 6).
Arrays are padded with -1 and read-only; rings further out (graph distance 2, 3, ...) serve where every
neighbour of a sensor is unavailable.
"""
from __future__ import annotations

import functools

import numpy as np

from lib.geometry.sensors import FACE_BOTTOM, FACE_TOP, HEX_NEIGHBORS, N_SENSORS, grid_ids, hex_ids

NO_NEIGHBOUR = -1
"""Padding of the neighbour arrays."""
_RECT_GRIDS = ("inner", "outer_fine", "us", "ds")
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # each touching cell pair once: right, down and both diagonals


def _touching_pairs(grid: np.ndarray) -> np.ndarray:
    """(P, 2) ids of different sensors whose cells in `grid` (H, W) touch at a side or a corner."""
    height, width = grid.shape
    pairs = []
    for dr, dc in _SHIFTS:
        cols_a = slice(max(0, -dc), width - max(0, dc))
        cols_b = slice(max(0, dc), width - max(0, -dc))
        a, b = grid[: height - dr, cols_a].ravel(), grid[dr:, cols_b].ravel()
        pairs.append(np.stack([a, b], axis=1)[a != b])
    return np.concatenate(pairs)


def _hex_pairs() -> np.ndarray:
    pairs = []
    for face in (FACE_TOP, FACE_BOTTOM):
        ids = hex_ids(face)
        centre, slot = np.nonzero(HEX_NEIGHBORS >= 0)
        pairs.append(np.stack([ids[centre], ids[HEX_NEIGHBORS[centre, slot]]], axis=1))
    return np.concatenate(pairs)


def _padded(lists: list[list[int]]) -> np.ndarray:
    width = max(1, max(len(items) for items in lists))
    out = np.full((len(lists), width), NO_NEIGHBOUR, dtype=np.int64)
    for sensor, items in enumerate(lists):
        out[sensor, : len(items)] = items
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=1)
def _adjacency() -> tuple[frozenset[int], ...]:
    pairs = np.concatenate([*(_touching_pairs(grid_ids(name)) for name in _RECT_GRIDS), _hex_pairs()])
    sets: list[set[int]] = [set() for _ in range(N_SENSORS)]
    for a, b in pairs.tolist():
        sets[a].add(b)
        sets[b].add(a)
    return tuple(frozenset(items) for items in sets)


def face_neighbours() -> np.ndarray:
    """(4760, K) int64 ids of each sensor's same-face neighbours in increasing id order, -1 padded."""
    return neighbour_rings(1)[0]


@functools.lru_cache(maxsize=4)
def neighbour_rings(depth: int) -> tuple[np.ndarray, ...]:
    """`depth` arrays (4760, K_r), -1 padded: ring r holds the sensors at graph distance r + 1 on the
    same face (ring 0 = face_neighbours()), in increasing id order."""
    if depth < 1:
        raise ValueError(f"neighbour_rings: depth must be >= 1, got {depth}")
    adjacency = _adjacency()
    rings: list[list[list[int]]] = [[] for _ in range(depth)]
    for sensor in range(N_SENSORS):
        seen, frontier = {sensor}, {sensor}
        for ring in rings:
            frontier = {other for member in frontier for other in adjacency[member]} - seen
            seen |= frontier
            ring.append(sorted(frontier))
    return tuple(_padded(ring) for ring in rings)
