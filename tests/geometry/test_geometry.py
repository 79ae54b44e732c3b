"""Every geometry fact from the detector description, proven against the computed positions.

Expected numbers below are the detector facts as quoted (to 0.01 deg / 0.01 cm; not outputs of
lib.geometry); cylindrical coordinates are recomputed here from POSITIONS. Every position is also
proven against the research code's own table in test_research_tables.py.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from lib import geometry as geo

FACE_SIZES = {"inner": 4092, "outer": 234, "us": 144, "ds": 144, "top": 73, "bottom": 73}
COARSE_PHI = np.linspace(119.85, 240.15, 24)
COARSE_Z = np.linspace(-41.42, 41.42, 9)
PATCH_FINE_ROWS, PATCH_FINE_COLS = range(30, 42), range(15, 30)
HEX_PHI = {"top": 117.24, "bottom": 242.76}
US_LINE = ((69.53, -35.1547), (102.95, -46.8392))  # (r, z) at inner and outer radius
QUOTED = 0.006  # tolerance of a number quoted to two decimals


def cylindrical(ids) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(r, phi in deg [0, 360), z) of sensors, recomputed from Cartesian POSITIONS."""
    x, y, z = geo.POSITIONS[np.asarray(ids)].T
    return np.hypot(x, y), np.degrees(np.arctan2(y, x)) % 360.0, z


def us_surface_z(r: np.ndarray) -> np.ndarray:
    (r0, z0), (r1, z1) = US_LINE
    return z0 + (r - r0) * (z1 - z0) / (r1 - r0)


def inside_xenon(points: np.ndarray) -> np.ndarray:
    """Independent description of the xenon volume bounded by the six faces."""
    r = np.hypot(points[:, 0], points[:, 1])
    phi = np.degrees(np.arctan2(points[:, 1], points[:, 0])) % 360.0
    z_limit = -us_surface_z(r)
    return (64.97 < r) & (r < 106.27) & (117.24 < phi) & (phi < 242.76) & (np.abs(points[:, 2]) < z_limit)


# --- ids ------------------------------------------------------------------------
def test_faces_partition_all_ids_exactly_once():
    sizes = {name: len(geo.face_ids(name)) for name in geo.FACE_NAMES}
    assert sizes == FACE_SIZES and sum(sizes.values()) == geo.N_SENSORS
    all_ids = np.concatenate([geo.face_ids(code) for code in range(6)])
    np.testing.assert_array_equal(np.sort(all_ids), np.arange(geo.N_SENSORS))
    for code, name in enumerate(geo.FACE_NAMES):
        np.testing.assert_array_equal(geo.face_ids(code), np.flatnonzero(geo.SENSOR_FACE == code))
        np.testing.assert_array_equal(geo.face_ids(code), geo.face_ids(name))
    np.testing.assert_array_equal(geo.IS_SIPM, np.arange(geo.N_SENSORS) < 4092)
    assert geo.face_ids("outer")[-18:].tolist() == list(range(4742, 4760))


def test_grids_and_hexes_cover_every_sensor_once():
    shown = [geo.grid_ids(name).ravel() for name in ("inner", "us", "ds")]
    shown += [np.unique(geo.grid_ids("outer_fine")), geo.hex_ids("top"), geo.hex_ids("bottom")]
    ids = np.concatenate(shown)
    assert len(ids) == geo.N_SENSORS
    np.testing.assert_array_equal(np.sort(ids), np.arange(geo.N_SENSORS))
    for name, shape in geo.GRID_SHAPES.items():
        assert geo.grid_ids(name).shape == shape


def test_fine_grid_shows_patch_coarse_ids_only_inside_patch():
    fine = geo.grid_ids("outer_fine")
    np.testing.assert_array_equal(np.unique(fine), geo.face_ids("outer"))
    patch_coarse = [4092 + 9 * row + col for row in range(10, 14) for col in range(3, 6)]
    inside = np.zeros(fine.shape, bool)
    inside[PATCH_FINE_ROWS.start:PATCH_FINE_ROWS.stop, PATCH_FINE_COLS.start:PATCH_FINE_COLS.stop] = True
    assert not np.isin(fine[~inside], patch_coarse + list(range(4742, 4760))).any()
    assert set(np.unique(fine[inside])) == set(patch_coarse) | set(range(4742, 4760))
    rows, cols = np.indices(fine.shape)
    np.testing.assert_array_equal(fine[~inside], 4092 + 9 * (rows[~inside] // 3) + cols[~inside] // 5)
    counts = geo.OUTER_FINE_CELL_COUNT
    assert counts.sum() == 72 * 45 and (counts[geo.SENSOR_FACE != geo.FACE_OUTER] == 0).all()
    assert (counts[patch_coarse] == 6).all() and (counts[4742:] == 6).all()


def test_each_outer_sensor_is_shown_in_a_rectangle_that_contains_its_position():
    fine = geo.grid_ids("outer_fine")
    phi_pitch, z_pitch = COARSE_PHI[1] - COARSE_PHI[0], COARSE_Z[1] - COARSE_Z[0]
    phi_edges = COARSE_PHI[0] - phi_pitch / 2 + np.arange(73) * phi_pitch / 3
    z_edges = COARSE_Z[0] - z_pitch / 2 + np.arange(46) * z_pitch / 5
    for sensor in geo.face_ids("outer"):
        rows, cols = np.nonzero(fine == sensor)
        height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
        assert height * width == len(rows) == geo.OUTER_FINE_CELL_COUNT[sensor]
        _, phi, z = cylindrical([sensor])
        assert phi_edges[rows.min()] < phi[0] < phi_edges[rows.max() + 1], sensor
        assert z_edges[cols.min()] < z[0] < z_edges[cols.max() + 1], sensor


RECT_GRIDS = [  # name, first id, column quantity, phi range, column range
    ("inner", 0, "z", (117.91, 242.09), (-32.46, 32.46)),
    ("outer_coarse", 4092, "z", (119.85, 240.15), (-41.42, 41.42)),
    ("us", 4308, "r", (119.85, 240.15), (69.53, 102.95)),
    ("ds", 4452, "r", (119.85, 240.15), (69.53, 102.95)),
]


@pytest.mark.parametrize("name,first,column,phi_range,col_range", RECT_GRIDS)
def test_id_formula_places_row_by_phi_and_column_by_z_or_r(name, first, column, phi_range, col_range):
    height, width = geo.GRID_SHAPES[name]
    ids = first + np.arange(height * width)
    r, phi, z = cylindrical(ids)
    col_value = z if column == "z" else r
    row_from_phi = np.rint((phi - phi_range[0]) / ((phi_range[1] - phi_range[0]) / (height - 1)))
    col_from_value = np.rint((col_value - col_range[0]) / ((col_range[1] - col_range[0]) / (width - 1)))
    np.testing.assert_array_equal(row_from_phi, (ids - first) // width)
    np.testing.assert_array_equal(col_from_value, (ids - first) % width)
    np.testing.assert_array_equal(geo.grid_ids(name), ids.reshape(height, width))


@pytest.mark.parametrize("name,first,column,phi_range,col_range", RECT_GRIDS)
def test_face_ranges(name, first, column, phi_range, col_range):
    r, phi, z = cylindrical(geo.grid_ids(name).ravel())
    col_value = z if column == "z" else r
    np.testing.assert_allclose([phi.min(), phi.max()], phi_range, atol=QUOTED)
    np.testing.assert_allclose([col_value.min(), col_value.max()], col_range, atol=QUOTED)
    if name == "inner":
        np.testing.assert_allclose(r, 64.97)
    if name == "outer_coarse":
        np.testing.assert_allclose(r, 106.27)
    if name in ("us", "ds"):
        np.testing.assert_allclose(z, us_surface_z(r) * (1.0 if name == "us" else -1.0))


def test_inner_phi_between_limits_means_negative_x():
    x = geo.POSITIONS[geo.face_ids("inner"), 0]
    assert (x < 0).all()


def test_inner_neighbour_spacing_follows_pitches():
    r, dphi, dz = 64.97, np.radians((242.08515 - 117.91485) / 92), 2 * 32.4601 / 43  # the research table's
    ids = geo.grid_ids("inner")
    along_z = np.linalg.norm(geo.POSITIONS[ids[:, 1:]] - geo.POSITIONS[ids[:, :-1]], axis=-1)
    along_phi = np.linalg.norm(geo.POSITIONS[ids[1:]] - geo.POSITIONS[ids[:-1]], axis=-1)
    np.testing.assert_allclose(along_z, dz)
    np.testing.assert_allclose(along_phi, 2 * r * np.sin(dphi / 2))


@pytest.mark.parametrize("name", ["inner", "outer_coarse", "outer_dense", "outer_fine", "us", "ds"])
def test_phi_increases_with_row_and_z_or_r_with_column(name):
    ids = geo.grid_ids(name)
    r, phi, z = (value.reshape(ids.shape) for value in cylindrical(ids.ravel()))
    col_value = r if name in ("us", "ds") else z
    strict = name != "outer_fine"  # fine cells repeat a sensor, so only non-decreasing there
    for diff in (np.diff(phi, axis=0), np.diff(col_value, axis=1)):
        assert (diff > 0).all() if strict else (diff >= 0).all()


def test_dense_patch_sits_in_coarse_rows_10_to_13_and_cols_3_to_5():
    phi_pitch, z_pitch = COARSE_PHI[1] - COARSE_PHI[0], COARSE_Z[1] - COARSE_Z[0]
    dense = np.arange(4742, 4760)
    _, phi, z = cylindrical(dense)
    assert ((COARSE_PHI[10] - phi_pitch / 2 < phi) & (phi < COARSE_PHI[13] + phi_pitch / 2)).all()
    assert ((COARSE_Z[3] - z_pitch / 2 < z) & (z < COARSE_Z[5] + z_pitch / 2)).all()
    patch = geo.grid_ids("outer_dense")
    coarse_cells = patch < 4742
    assert sorted(patch[coarse_cells]) == [4092 + 9 * row + col for row in range(10, 14) for col in range(3, 6)]
    assert patch[~coarse_cells].tolist() == list(range(4742, 4760))  # row-major, consecutive
    # every patch cell, coarse ids included, holds its sensor at the cell centre (phi 171.28 .. 188.72, z +-12.40)
    r, phi, z = (value.reshape(patch.shape) for value in cylindrical(patch.ravel()))
    np.testing.assert_allclose(r, 106.27)
    np.testing.assert_allclose(phi, np.linspace(171.28, 188.72, 6)[:, None].repeat(5, 1), atol=QUOTED)
    np.testing.assert_allclose(z, np.linspace(-12.40, 12.40, 5)[None].repeat(6, 0), atol=1e-9)


# --- hexagonal faces --------------------------------------------------------------
@pytest.mark.parametrize("face", ["top", "bottom"])
def test_hex_edges_are_exactly_the_pairs_within_8_cm(face):
    positions = geo.POSITIONS[geo.hex_ids(face)]
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    close = {(i, j) for i, j in itertools.combinations(range(geo.N_HEX), 2) if distance[i, j] <= 8.0}
    edges = {tuple(edge) for edge in geo.HEX_EDGES.tolist()}
    assert all(i < j for i, j in edges) and edges == close
    from_neighbors = {(min(i, j), max(i, j)) for i, row in enumerate(geo.HEX_NEIGHBORS) for j in row if j >= 0}
    assert from_neighbors == edges


@pytest.mark.parametrize("face", ["top", "bottom"])
def test_hex_rows_lie_in_the_face_plane(face):
    ids = geo.hex_ids(face)
    np.testing.assert_array_equal(ids, geo.face_ids(face))
    r, phi, z = cylindrical(ids)
    np.testing.assert_allclose(phi, HEX_PHI[face])
    starts = np.cumsum((0,) + geo.HEX_ROW_LENGTHS)
    for k, length in enumerate(geo.HEX_ROW_LENGTHS):
        row_r, row_z = r[starts[k]:starts[k + 1]], z[starts[k]:starts[k + 1]]
        np.testing.assert_allclose(row_r, 68.27 + 6.91 * k)
        np.testing.assert_allclose(np.diff(row_z), 6.12)
        np.testing.assert_allclose(row_z.mean(), 0.0, atol=1e-9)
        assert np.isclose(row_z, 0.0, atol=1e-9).any() == (length % 2 == 1)
    # neighbour slots: (left, right, row below x2, row above x2), each pair ordered by z
    has = geo.HEX_NEIGHBORS >= 0
    neighbor_r, neighbor_z = r[geo.HEX_NEIGHBORS], z[geo.HEX_NEIGHBORS]
    for slots, dr in (((0, 1), 0.0), ((2, 3), -6.91), ((4, 5), 6.91)):
        for slot in slots:
            np.testing.assert_allclose((neighbor_r[:, slot] - r)[has[:, slot]], dr, atol=1e-9)
        both = has[:, slots[0]] & has[:, slots[1]]
        assert (neighbor_z[both, slots[0]] < z[both]).all() and (neighbor_z[both, slots[1]] > z[both]).all()


# --- normals ------------------------------------------------------------------------
def test_normals_are_unit_and_point_into_the_xenon():
    np.testing.assert_allclose(np.linalg.norm(geo.NORMALS, axis=1), 1.0)
    step = 1.0
    assert inside_xenon(geo.POSITIONS + step * geo.NORMALS).all()
    assert not inside_xenon(geo.POSITIONS - step * geo.NORMALS).any()
    inner = geo.face_ids("inner")
    assert (np.einsum("ij,ij->i", geo.NORMALS[inner], geo.POSITIONS[inner]) > 0).all()


def test_endcap_and_hex_normals_are_perpendicular_to_their_surfaces():
    for face, z_sign in (("us", 1), ("ds", -1)):
        ids = geo.grid_ids(face)
        slope = geo.POSITIONS[ids[:, -1]] - geo.POSITIONS[ids[:, 0]]  # along the slanted (r, z) line
        normals = geo.NORMALS[ids[:, 0]]
        np.testing.assert_allclose(np.einsum("ij,ij->i", slope, normals), 0.0, atol=1e-9)
        r_hat = geo.POSITIONS[ids[:, 0], :2] / np.linalg.norm(geo.POSITIONS[ids[:, 0], :2], axis=1, keepdims=True)
        assert (np.sign(normals[:, 2]) == z_sign).all() and (np.einsum("ij,ij->i", normals[:, :2], r_hat) > 0).all()
    for face in ("top", "bottom"):
        ids = geo.hex_ids(face)
        in_plane = geo.POSITIONS[ids[1:]] - geo.POSITIONS[ids[0]]
        np.testing.assert_allclose(in_plane @ geo.NORMALS[ids[0]], 0.0, atol=1e-9)
        np.testing.assert_allclose(geo.NORMALS[ids], geo.NORMALS[ids[:1]].repeat(len(ids), 0))


def test_constants_are_read_only():
    with pytest.raises(ValueError):
        geo.POSITIONS[0, 0] = 1.0
    with pytest.raises(ValueError):
        geo.grid_ids("inner")[0, 0] = 1


# --- torch maps ---------------------------------------------------------------------
def random_flat(channels: int = 3, dtype=torch.float32, seed: int = 0) -> torch.Tensor:
    return torch.rand(2, geo.N_SENSORS, channels, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["inner", "outer_coarse", "outer_dense", "us", "ds"])
def test_grid_round_trip_restores_face_and_leaves_others(name, dtype):
    x, before = random_flat(dtype=dtype), random_flat(dtype=dtype, seed=1)
    grid = geo.flat_to_grid(x, name)
    ids = geo.grid_ids(name)
    assert grid.shape == (2, 3, *ids.shape) and torch.equal(grid[1, 2, 0, 1], x[1, ids[0, 1], 2])
    out = geo.grid_to_flat(grid, name, before.clone())
    touched = np.isin(np.arange(geo.N_SENSORS), ids)
    assert torch.equal(out[:, touched], x[:, touched]) and torch.equal(out[:, ~touched], before[:, ~touched])
    mask = x[..., 0] > 0.5
    assert torch.equal(geo.mask_to_grid(mask, name), grid[:, 0] > 0.5)


@pytest.mark.parametrize("face", ["top", "bottom", 4, 5])
def test_hex_round_trip_restores_face_and_leaves_others(face):
    x, before = random_flat(), random_flat(seed=1)
    ids = geo.hex_ids(face)
    hexes = geo.flat_to_hex(x, face)
    assert hexes.shape == (2, geo.N_HEX, 3) and torch.equal(hexes[:, 5], x[:, ids[5]])
    out = geo.hex_to_flat(hexes, face, before.clone())
    touched = np.isin(np.arange(geo.N_SENSORS), ids)
    assert torch.equal(out[:, touched], x[:, touched]) and torch.equal(out[:, ~touched], before[:, ~touched])
    assert torch.equal(geo.mask_to_hex(x[..., 1] > 0.5, face), hexes[..., 1] > 0.5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown face 'side'"):
        geo.face_ids("side")
    with pytest.raises(ValueError, match="not hexagonal"):
        geo.hex_ids("inner")
    with pytest.raises(ValueError, match="unknown grid 'outer'"):
        geo.grid_ids("outer")
    with pytest.raises(ValueError, match="not a one-sensor-per-cell grid"):
        geo.flat_to_grid(random_flat(), "outer_fine")
    with pytest.raises(ValueError, match=r"\(B, 4760, C\)"):
        geo.flat_to_grid(torch.zeros(2, 100, 2), "inner")

