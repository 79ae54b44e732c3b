"""Every sensor position and normal of lib.geometry proven against the research code's own tables.

Fixtures (tests/geometry/data, numbers copied from github.com/weiyuanli-icepp/xec-ml-wl, see their headers):
- research_sensor_positions.txt: the nominal table lib/sensor_positions.txt, all 4760 sensors;
- research_sensor_directions_excerpt.txt: 246 lines of lib/sensor_directions.txt, the as-built positions,
  inward directions and face codes dumped from the MEG II run header, covering every face.
"""
from __future__ import annotations

import numpy as np
import pytest

from lib import geometry as geo
from tests.geometry.tables import research_as_built, research_positions

TOLERANCE_CM = 0.01
PATCH_COARSE_IDS = [4185, 4186, 4187, 4194, 4195, 4196, 4203, 4204, 4205, 4212, 4213, 4214]


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return research_positions()


def test_every_position_matches_the_research_table(table):
    distance = np.linalg.norm(geo.POSITIONS - table, axis=1)
    worst = int(distance.argmax())
    assert distance.max() < TOLERANCE_CM, f"sensor {worst} is {distance[worst]:.3f} cm from the research table"


def test_coarse_ids_inside_the_dense_patch_sit_at_their_patch_cells(table):
    patch = geo.grid_ids("outer_dense")
    for sensor in PATCH_COARSE_IDS:
        np.testing.assert_allclose(geo.POSITIONS[sensor], table[sensor], atol=TOLERANCE_CM)
    # the table puts them on the patch's rows 0, 2, 3, 5 and columns 0, 2, 4 (r 106.27, phi 171.28 .. 188.72)
    rows, cols = np.nonzero(np.isin(patch, PATCH_COARSE_IDS))
    assert sorted(set(rows.tolist())) == [0, 2, 3, 5] and sorted(set(cols.tolist())) == [0, 2, 4]
    phi = np.degrees(np.arctan2(table[patch, 1], table[patch, 0])) % 360
    np.testing.assert_allclose(phi[:, 0], [171.28, 174.77, 178.26, 181.74, 185.23, 188.72], atol=0.006)
    np.testing.assert_allclose(table[patch, 2][0], [-12.4, -6.2, 0.0, 6.2, 12.4])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


def test_inner_and_outer_normals_are_radial_at_the_table_positions(table):
    for face, sign in (("inner", 1.0), ("outer", -1.0)):
        ids = geo.face_ids(face)
        radial = _unit(table[ids] * (1.0, 1.0, 0.0))
        np.testing.assert_allclose(geo.NORMALS[ids], sign * radial, atol=1e-4)


def test_endcap_and_hex_normals_are_perpendicular_to_the_table_surfaces(table):
    for face in ("us", "ds"):
        rows = geo.grid_ids(face)
        along_r = _unit(table[rows[:, -1]] - table[rows[:, 0]])  # each phi row runs along r on the slanted face
        tangent = _unit(np.cross([0.0, 0.0, 1.0], table[rows[:, 0]]))
        for normals in np.moveaxis(geo.NORMALS[rows], 1, 0):
            np.testing.assert_allclose(np.einsum("ij,ij->i", normals, along_r), 0.0, atol=1e-4)
            np.testing.assert_allclose(np.einsum("ij,ij->i", normals, tangent), 0.0, atol=1e-4)
    for face in ("top", "bottom"):
        ids = geo.hex_ids(face)
        in_plane = table[ids] - table[ids].mean(axis=0)
        np.testing.assert_allclose(in_plane @ geo.NORMALS[ids].T, 0.0, atol=1e-3)


def test_as_built_run_header_agrees_on_faces_directions_and_places():
    as_built = research_as_built()
    ids = as_built["ids"]
    assert set(as_built["faces"]) == set(range(6)) and len(ids) == len(set(ids.tolist())) == 246
    np.testing.assert_array_equal(as_built["faces"], geo.SENSOR_FACE[ids])  # MEG's face codes are ours
    cos_tilt = np.einsum("ij,ij->i", _unit(as_built["directions"]), geo.NORMALS[ids])
    assert np.degrees(np.arccos(cos_tilt.min())) < 1.5, "nominal normals point the way the detector's do"
    shift = np.linalg.norm(as_built["positions"] - geo.POSITIONS[ids], axis=1)
    assert shift.max() < 1.5 and shift[as_built["faces"] != geo.FACE_INNER].max() < 0.15
