"""Same-face neighbours of every sensor: the local neighbourhood the inpainter and its baselines read.

Rectangular faces: the 8 cells around a sensor's cell in its grid (3x3 minus the centre; fewer on an
edge). The outer face has two grids, the coarse 24x9 PMT grid and the 6x5 dense patch: a sensor's
neighbours are the union of its neighbours in every grid it is a cell of, so the 12 coarse PMTs inside
the patch have both their coarse and their dense neighbours, and the coarse PMTs around the patch reach
into it. Top and bottom: the 6 neighbours of the hex graph (HEX_NEIGHBORS). A neighbour is always on
the sensor's own face, never the sensor itself; each row is sorted nearest first (nominal positions,
ties by id) and padded with -1.
"""
from __future__ import annotations

import functools
import itertools

import numpy as np

from lib.geometry.sensors import HEX_NEIGHBORS, N_SENSORS, POSITIONS, grid_ids, hex_ids

NO_NEIGHBOUR = -1
"""Padding of the neighbour map."""
NEIGHBOUR_GRIDS = ("inner", "outer_coarse", "outer_dense", "us", "ds")
"""The one-sensor-per-cell grids of the rectangular faces."""
_AROUND = [(dr, dc) for dr, dc in itertools.product((-1, 0, 1), repeat=2) if (dr, dc) != (0, 0)]


def _grid_pairs(ids: np.ndarray) -> set[tuple[int, int]]:
    """(sensor, neighbour) pairs of the 8-neighbourhood in one grid of ids."""
    height, width = ids.shape
    pairs = set()
    for row, col in itertools.product(range(height), range(width)):
        for dr, dc in _AROUND:
            if 0 <= row + dr < height and 0 <= col + dc < width:
                pairs.add((int(ids[row, col]), int(ids[row + dr, col + dc])))
    return pairs


def _hex_pairs(face: str) -> set[tuple[int, int]]:
    ids = hex_ids(face)
    return {(int(ids[i]), int(ids[j])) for i, row in enumerate(HEX_NEIGHBORS) for j in row if j >= 0}


@functools.lru_cache(maxsize=None)
def face_neighbours() -> np.ndarray:
    """(4760, K) int64, read-only: the same-face neighbours of each sensor, nearest first, padded with -1.

    K is the largest neighbourhood (a coarse outer PMT at the dense patch's border has more than 8)."""
    pairs = set().union(*(_grid_pairs(grid_ids(name)) for name in NEIGHBOUR_GRIDS),
                        *(_hex_pairs(face) for face in ("top", "bottom")))
    lists: list[list[int]] = [[] for _ in range(N_SENSORS)]
    for sensor, other in pairs:
        if sensor != other:
            lists[sensor].append(other)
    width = max(len(items) for items in lists)
    table = np.full((N_SENSORS, width), NO_NEIGHBOUR, dtype=np.int64)
    for sensor, items in enumerate(lists):
        distance = np.linalg.norm(POSITIONS[items] - POSITIONS[sensor], axis=1) if items else np.empty(0)
        ordered = [items[i] for i in np.lexsort((items, np.round(distance, 6)))]
        table[sensor, : len(ordered)] = ordered
    table.setflags(write=False)
    return table
