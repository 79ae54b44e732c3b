"""The same-face neighbour map: grid rings on the rectangular faces (both outer grids), the hex graph on top and
bottom, symmetric, nearest first."""
from __future__ import annotations

import numpy as np
import pytest

from lib import geometry as geo
from lib.geometry.neighbours import NO_NEIGHBOUR, face_neighbours

TABLE = face_neighbours()


def neighbours_of(sensor: int) -> list[int]:
    return [int(other) for other in TABLE[sensor] if other != NO_NEIGHBOUR]


def test_shape_padding_and_read_only():
    assert TABLE.shape[0] == geo.N_SENSORS and TABLE.dtype == np.int64 and not TABLE.flags.writeable
    real = TABLE != NO_NEIGHBOUR
    assert np.all(np.diff(real.astype(int), axis=1) <= 0)  # the neighbours first, then the padding
    assert real.sum(axis=1).min() == 2 and real[:, -1].any()  # a hex corner has 2; the widest row fills K


def test_neighbours_are_on_the_same_face_distinct_and_symmetric():
    pairs = {(sensor, other) for sensor in range(geo.N_SENSORS) for other in neighbours_of(sensor)}
    assert all(geo.SENSOR_FACE[a] == geo.SENSOR_FACE[b] and a != b for a, b in pairs)
    assert all((b, a) in pairs for a, b in pairs)
    assert all(len(set(neighbours_of(s))) == len(neighbours_of(s)) for s in range(geo.N_SENSORS))


@pytest.mark.parametrize("name", ["inner", "us", "ds"])
def test_rectangular_faces_use_the_ring_of_eight(name):
    ids = geo.grid_ids(name)
    assert set(neighbours_of(ids[5, 3])) == set(ids[4:7, 2:5].ravel().tolist()) - {int(ids[5, 3])}
    assert sorted(neighbours_of(ids[0, 0])) == sorted([ids[0, 1], ids[1, 0], ids[1, 1]])


@pytest.mark.parametrize("face", ["top", "bottom"])
def test_hexagonal_faces_use_the_hex_graph(face):
    ids = geo.hex_ids(face)
    for local, row in enumerate(geo.HEX_NEIGHBORS):
        assert sorted(neighbours_of(ids[local])) == sorted(ids[row[row >= 0]].tolist())


def test_outer_face_joins_the_coarse_grid_and_the_dense_patch():
    coarse, dense = geo.grid_ids("outer_coarse"), geo.grid_ids("outer_dense")
    in_patch = int(dense[2, 2])  # a coarse PMT that sits in the patch
    assert in_patch == 4195 and {int(dense[1, 2]), int(dense[3, 1])} <= set(neighbours_of(in_patch))
    assert {int(coarse[10, 4]), int(coarse[12, 4])} <= set(neighbours_of(in_patch))  # its coarse-grid ring
    assert set(neighbours_of(int(dense[1, 1]))) == set(dense[0:3, 0:3].ravel().tolist()) - {int(dense[1, 1])}
    assert sorted(neighbours_of(int(coarse[0, 0]))) == sorted([coarse[0, 1], coarse[1, 0], coarse[1, 1]])


def test_rows_are_sorted_nearest_first():
    for sensor in range(0, geo.N_SENSORS, 7):
        others = neighbours_of(sensor)
        distance = np.linalg.norm(geo.POSITIONS[others] - geo.POSITIONS[sensor], axis=1)
        assert np.all(np.diff(distance) >= -1e-6)
