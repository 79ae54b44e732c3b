"""Same-face neighbours: grid cells that touch, the hex graph, the outer face's coarse grid and dense patch."""
from __future__ import annotations

import numpy as np
import pytest

from lib import geometry as geo
from lib.geometry.neighbours import face_neighbours, neighbour_rings


def neighbour_set(sensor: int) -> set[int]:
    row = face_neighbours()[sensor]
    return set(row[row >= 0].tolist())


def test_neighbours_are_symmetric_on_the_same_face_and_never_the_sensor_itself():
    table = face_neighbours()
    assert table.shape[0] == geo.N_SENSORS and not table.flags.writeable
    for sensor in range(geo.N_SENSORS):
        others = neighbour_set(sensor)
        assert sensor not in others and others
        assert (geo.SENSOR_FACE[list(others)] == geo.SENSOR_FACE[sensor]).all()
        assert all(sensor in neighbour_set(other) for other in others)


@pytest.mark.parametrize("name", ["inner", "us", "ds"])
def test_rectangular_faces_use_the_surrounding_cells(name):
    grid = geo.grid_ids(name)
    height, width = grid.shape
    assert neighbour_set(grid[2, 3]) == {grid[r, c] for r in (1, 2, 3) for c in (2, 3, 4)} - {grid[2, 3]}
    assert neighbour_set(grid[0, 0]) == {grid[0, 1], grid[1, 0], grid[1, 1]}
    assert neighbour_set(grid[height - 1, width - 1]) == {grid[-2, -1], grid[-1, -2], grid[-2, -2]}


@pytest.mark.parametrize("face", ["top", "bottom"])
def test_hex_faces_use_the_hex_graph(face):
    ids = geo.hex_ids(face)
    for local, row in enumerate(geo.HEX_NEIGHBORS):
        assert neighbour_set(ids[local]) == set(ids[row[row >= 0]].tolist())


def test_outer_face_joins_the_coarse_grid_and_the_dense_patch():
    coarse = geo.grid_ids("outer_coarse")
    assert neighbour_set(coarse[0, 0]) == {coarse[0, 1], coarse[1, 0], coarse[1, 1]}
    # coarse row 9 col 4 sits right above the patch's top row (4185, 4742, 4186, 4743, 4187)
    assert neighbour_set(coarse[9, 4]) == {coarse[8, 3], coarse[8, 4], coarse[8, 5], coarse[9, 3], coarse[9, 5],
                                           4742, 4186, 4743}
    # a patch PMT in the patch's middle touches only patch PMTs, a corner one the coarse PMTs beside it
    assert neighbour_set(4749) == {4744, 4745, 4746, 4194, 4195, 4203, 4751, 4204}
    assert neighbour_set(4185) == {coarse[9, 2], coarse[9, 3], coarse[10, 2], 4742, 4744, 4745}


def test_outer_rings_two_and_three_grow_outwards():
    rings = neighbour_rings(3)
    inner = geo.grid_ids("inner")
    second = rings[1][inner[10, 10]]
    assert set(second[second >= 0].tolist()) == {inner[r, c] for r in range(8, 13) for c in range(8, 13)
                                                 if max(abs(r - 10), abs(c - 10)) == 2}
    third = rings[2][inner[10, 10]]
    assert (third >= 0).sum() == 24


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1"):
        neighbour_rings(0)
    assert np.array_equal(neighbour_rings(1)[0], face_neighbours())
