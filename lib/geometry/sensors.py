"""Sensor layout: ids, grids, hexagonal rows, positions and normals (numpy, read-only constants).

See lib.geometry for the facts and the grid orientation.
"""
from __future__ import annotations


import numpy as np

N_SENSORS = 4760
FACE_NAMES = ("inner", "outer", "us", "ds", "top", "bottom")
FACE_INNER, FACE_OUTER, FACE_US, FACE_DS, FACE_TOP, FACE_BOTTOM = range(6)
GRID_SHAPES: dict[str, tuple[int, int]] = {
    "inner": (93, 44),
    "outer_coarse": (24, 9),
    "outer_dense": (6, 5),
    "outer_fine": (72, 45),
    "us": (24, 6),
    "ds": (24, 6),
}
OUTER_FINE_FACTOR = (3, 5)
HEX_ROW_LENGTHS = (11, 12, 11, 12, 13, 14)
N_HEX = sum(HEX_ROW_LENGTHS)

# --- the nominal layout (cm, degrees); proven sensor by sensor against the research code's table
# (tests/geometry/data/research_sensor_positions.txt) to 0.01 cm --------------------------------
INNER_RADIUS = 64.97
"""Radius (cm) of the inner face: the SiPM photosensitive surfaces and the origin of the depth w
(MEG: spacer radius 64.84 + MPPC height 0.13)."""
_INNER_FIRST, _INNER_R = 0, INNER_RADIUS
_INNER_PHI, _INNER_Z = (117.91485, 242.08515), (-32.4601, 32.4601)
_OUTER_FIRST, _OUTER_R = 4092, 106.27
_OUTER_PHI_PITCH = 5.23
_OUTER_PHI, _OUTER_Z = (180.0 - 11.5 * _OUTER_PHI_PITCH, 180.0 + 11.5 * _OUTER_PHI_PITCH), (-41.424, 41.424)
_DENSE_PHI = (180.0 - 2.5 * 2 / 3 * _OUTER_PHI_PITCH, 180.0 + 2.5 * 2 / 3 * _OUTER_PHI_PITCH)  # 171.28 .. 188.72
_DENSE_Z = (-12.4, 12.4)
_DENSE_COARSE_ROWS, _DENSE_COARSE_COLS = range(10, 14), range(3, 6)
_OUTER_DENSE_LAYOUT = (  # ids at their physical places: 12 coarse ids (4185-4214) sit inside the patch
    (4185, 4742, 4186, 4743, 4187),
    (4744, 4745, 4746, 4747, 4748),
    (4194, 4749, 4195, 4750, 4196),
    (4203, 4751, 4204, 4752, 4205),
    (4753, 4754, 4755, 4756, 4757),
    (4212, 4758, 4213, 4759, 4214),
)
_US_FIRST, _DS_FIRST = 4308, 4452
_ENDCAP_R = (69.53, 102.95)
_US_Z = (-35.1547, -46.8392)  # at inner r, at outer r (DS mirrored)
_TOP_FIRST, _BOTTOM_FIRST = 4596, 4669
_HEX_PHI = {FACE_TOP: 117.24, FACE_BOTTOM: -117.24}
_HEX_R0, _HEX_ROW_PITCH, _HEX_Z_PITCH = 68.27, 6.91, 6.12


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


def _rect_grid(first: int, shape: tuple[int, int]) -> np.ndarray:
    """Ids first + W*row + col laid out as (H, W)."""
    return first + np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape)


def _build_grids() -> dict[str, np.ndarray]:
    grids = {
        "inner": _rect_grid(_INNER_FIRST, GRID_SHAPES["inner"]),
        "outer_coarse": _rect_grid(_OUTER_FIRST, GRID_SHAPES["outer_coarse"]),
        "outer_dense": np.array(_OUTER_DENSE_LAYOUT, dtype=np.int64),
        "us": _rect_grid(_US_FIRST, GRID_SHAPES["us"]),
        "ds": _rect_grid(_DS_FIRST, GRID_SHAPES["ds"]),
    }
    fine_rows, fine_cols = OUTER_FINE_FACTOR
    fine = np.repeat(np.repeat(grids["outer_coarse"], fine_rows, axis=0), fine_cols, axis=1)
    row0, col0 = _DENSE_COARSE_ROWS.start * fine_rows, _DENSE_COARSE_COLS.start * fine_cols
    patch_h, patch_w = len(_DENSE_COARSE_ROWS) * fine_rows, len(_DENSE_COARSE_COLS) * fine_cols
    dense_h, dense_w = GRID_SHAPES["outer_dense"]
    patch = np.repeat(np.repeat(grids["outer_dense"], patch_h // dense_h, axis=0), patch_w // dense_w, axis=1)
    fine[row0:row0 + patch_h, col0:col0 + patch_w] = patch
    grids["outer_fine"] = fine
    for name, ids in grids.items():
        assert ids.shape == GRID_SHAPES[name], name
    return {name: _readonly(ids) for name, ids in grids.items()}


_GRID_IDS = _build_grids()


def _build_hex_ids() -> dict[int, np.ndarray]:
    return {
        face: _readonly(first + np.arange(N_HEX, dtype=np.int64))
        for face, first in ((FACE_TOP, _TOP_FIRST), (FACE_BOTTOM, _BOTTOM_FIRST))
    }


_HEX_IDS = _build_hex_ids()
_HEX_ROW = np.repeat(np.arange(len(HEX_ROW_LENGTHS)), HEX_ROW_LENGTHS)
_HEX_ROW_START = np.concatenate([[0], np.cumsum(HEX_ROW_LENGTHS)[:-1]])
_HEX_COL = np.arange(N_HEX) - _HEX_ROW_START[_HEX_ROW]


def _build_sensor_faces() -> np.ndarray:
    faces = np.full(N_SENSORS, -1, dtype=np.int64)
    faces[_GRID_IDS["inner"].ravel()] = FACE_INNER
    faces[_GRID_IDS["outer_fine"].ravel()] = FACE_OUTER
    faces[_GRID_IDS["us"].ravel()] = FACE_US
    faces[_GRID_IDS["ds"].ravel()] = FACE_DS
    faces[_HEX_IDS[FACE_TOP]] = FACE_TOP
    faces[_HEX_IDS[FACE_BOTTOM]] = FACE_BOTTOM
    assert (faces >= 0).all()
    return _readonly(faces)


SENSOR_FACE = _build_sensor_faces()
IS_SIPM = _readonly(SENSOR_FACE == FACE_INNER)


def _build_positions_and_normals() -> tuple[np.ndarray, np.ndarray]:
    """Cylindrical (r, phi, z) per sensor and inward normal in the local (r_hat, phi_hat, z_hat) basis."""
    r, phi, z = (np.zeros(N_SENSORS) for _ in range(3))
    local_normal = np.zeros((N_SENSORS, 3))

    def place_grid(ids, row_phi, col_r, col_z, normal):
        rows, cols = np.indices(ids.shape)
        phi[ids], r[ids], z[ids] = row_phi[rows], np.broadcast_to(col_r, ids.shape[1])[cols], col_z[cols]
        local_normal[ids] = normal

    inner_h, inner_w = GRID_SHAPES["inner"]
    place_grid(_GRID_IDS["inner"], np.linspace(*_INNER_PHI, inner_h), _INNER_R,
               np.linspace(*_INNER_Z, inner_w), (1.0, 0.0, 0.0))
    outer_h, outer_w = GRID_SHAPES["outer_coarse"]
    outer_phi = np.linspace(*_OUTER_PHI, outer_h)
    place_grid(_GRID_IDS["outer_coarse"], outer_phi, _OUTER_R, np.linspace(*_OUTER_Z, outer_w), (-1.0, 0.0, 0.0))
    # the dense patch overrides the coarse places: its 12 coarse ids sit inside it, 1.6-2.6 cm off their coarse cell
    place_grid(_GRID_IDS["outer_dense"], np.linspace(*_DENSE_PHI, GRID_SHAPES["outer_dense"][0]), _OUTER_R,
               np.linspace(*_DENSE_Z, GRID_SHAPES["outer_dense"][1]), (-1.0, 0.0, 0.0))

    endcap_w = GRID_SHAPES["us"][1]
    endcap_r = np.linspace(*_ENDCAP_R, endcap_w)
    us_z = np.linspace(*_US_Z, endcap_w)  # linear in r, so equal steps in r give equal steps in z
    dr, dz = _ENDCAP_R[1] - _ENDCAP_R[0], _US_Z[1] - _US_Z[0]
    us_normal = np.array([-dz, 0.0, dr]) / np.hypot(dr, dz)  # perpendicular to the slanted line, +z side
    place_grid(_GRID_IDS["us"], outer_phi, endcap_r, us_z, us_normal)
    place_grid(_GRID_IDS["ds"], outer_phi, endcap_r, -us_z, us_normal * (1.0, 1.0, -1.0))

    lengths = np.asarray(HEX_ROW_LENGTHS)
    hex_r = _HEX_R0 + _HEX_ROW_PITCH * _HEX_ROW
    hex_z = (_HEX_COL - (lengths[_HEX_ROW] - 1) / 2) * _HEX_Z_PITCH
    for face, towards_phi in ((FACE_TOP, 1.0), (FACE_BOTTOM, -1.0)):
        ids = _HEX_IDS[face]
        r[ids], phi[ids], z[ids] = hex_r, _HEX_PHI[face], hex_z
        local_normal[ids] = (0.0, towards_phi, 0.0)

    phi_rad = np.deg2rad(phi)
    cos, sin = np.cos(phi_rad), np.sin(phi_rad)
    positions = np.stack([r * cos, r * sin, z], axis=1)
    n_r, n_phi, n_z = local_normal.T
    normals = np.stack([n_r * cos - n_phi * sin, n_r * sin + n_phi * cos, n_z], axis=1)
    return _readonly(positions), _readonly(normals)


POSITIONS, NORMALS = _build_positions_and_normals()


def _build_outer_fine_cell_count() -> np.ndarray:
    return _readonly(np.bincount(_GRID_IDS["outer_fine"].ravel(), minlength=N_SENSORS).astype(np.int64))


OUTER_FINE_CELL_COUNT = _build_outer_fine_cell_count()


def _hex_local_index(row: int, col: int) -> int:
    inside = 0 <= row < len(HEX_ROW_LENGTHS) and 0 <= col < HEX_ROW_LENGTHS[row]
    return int(_HEX_ROW_START[row]) + col if inside else -1


def _build_hex_neighbors() -> np.ndarray:
    """Neighbours from the hex rule: in-row c-1, c+1; longer row (c, c+1); shorter row (c-1, c)."""
    neighbors = np.full((N_HEX, 6), -1, dtype=np.int64)
    for i, (row, col) in enumerate(zip(_HEX_ROW.tolist(), _HEX_COL.tolist())):
        cells = [(row, col - 1), (row, col + 1)]
        for other in (row - 1, row + 1):
            longer = 0 <= other < len(HEX_ROW_LENGTHS) and HEX_ROW_LENGTHS[other] > HEX_ROW_LENGTHS[row]
            first = col if longer else col - 1
            cells += [(other, first), (other, first + 1)]
        neighbors[i] = [_hex_local_index(r, c) for r, c in cells]
    return _readonly(neighbors)


HEX_NEIGHBORS = _build_hex_neighbors()


def _build_hex_edges() -> np.ndarray:
    centre = np.repeat(np.arange(N_HEX), 6)
    other = HEX_NEIGHBORS.ravel()
    keep = other > centre
    return _readonly(np.stack([centre[keep], other[keep]], axis=1))


HEX_EDGES = _build_hex_edges()


# --- lookups ------------------------------------------------------------------
def _face_code(face: str | int) -> int:
    if isinstance(face, str) and face in FACE_NAMES:
        return FACE_NAMES.index(face)
    if isinstance(face, (int, np.integer)) and not isinstance(face, bool) and 0 <= face < len(FACE_NAMES):
        return int(face)
    raise ValueError(f"unknown face {face!r}; use one of {FACE_NAMES} or a code 0-{len(FACE_NAMES) - 1}")


def face_ids(face: str | int) -> np.ndarray:
    """Sorted sensor ids of a face (outer: 234 ids, dense patch included)."""
    return _FACE_IDS[_face_code(face)]


_FACE_IDS = tuple(_readonly(np.flatnonzero(SENSOR_FACE == code)) for code in range(len(FACE_NAMES)))


def grid_ids(name: str) -> np.ndarray:
    """(H, W) sensor id per cell of a rectangular grid named in GRID_SHAPES (read-only)."""
    if name not in _GRID_IDS:
        raise ValueError(f"unknown grid {name!r}; use one of {tuple(GRID_SHAPES)}")
    return _GRID_IDS[name]


def hex_ids(face: str | int) -> np.ndarray:
    """(73,) sensor ids of the "top" or "bottom" face in hex row order."""
    code = _face_code(face)
    if code not in _HEX_IDS:
        raise ValueError(f"face {face!r} is not hexagonal; use 'top' or 'bottom'")
    return _HEX_IDS[code]


