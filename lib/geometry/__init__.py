"""Detector geometry: the single source of truth for sensor ids, positions and face maps.

4760 photo-sensors line six faces of the xenon volume (codes: 0 inner, 1 outer,
2 US (z < 0), 3 DS (z > 0), 4 top (y > 0), 5 bottom (y < 0); the MEG II run header's
codes). Units are cm in the MEG frame: the detector sits on the -x side, phi = atan2(y, x)
mod 360 deg runs from about 118 to 242 deg. Inner sensors are SiPMs, all others PMTs.
Conventions of u, v, w and emission angles: lib.geometry.coordinates; every branch and
fact with its source: docs/conventions.md.

Orientation of every rectangular grid (inner, outer coarse/dense/fine, US, DS):
rows are phi (increasing with row), columns are z (increasing with column; for
US/DS the column is the radius r, increasing). Grids index sensors by id.

Outer face: 216 coarse PMTs (24 phi-rows x 9 z-cols, id = 4092 + 9*row + col)
plus a dense 6 x 5 patch (18 extra ids 4742-4759 and 12 coarse ids) over coarse
rows 10-13 x cols 3-5. The 12 coarse ids 4185-4187, 4194-4196, 4203-4205, 4212-4214
physically sit in the patch (its rows 0, 2, 3, 5 and columns 0, 2, 4), not at their
coarse-cell centres. The "outer_fine" display grid (event plots) upsamples each coarse
cell x3 in phi and x5 in z (72 x 45) and pastes the patch at its true place (fine rows
30-41, cols 15-29, each patch cell 2 x 3 fine cells); every fine cell shows one sensor.
The models use the coarse and dense grids, one cell per sensor.

Top/bottom faces are hexagonal: rows of HEX_ROW_LENGTHS PMTs with consecutive
ids, in the half-planes phi = +117.24 / -117.24 deg. HEX_NEIGHBORS slots are
(left, right, row-below a, row-below b, row-above a, row-above b), -1 = none.
face_neighbours() (lib.geometry.neighbours) is every sensor's same-face neighbourhood (touching grid
cells, the outer face on its fine grid, the hex graph); (4760, K) padded with NO_NEIGHBOUR = -1.

All numpy arrays are read-only constants of the nominal layout computed at import
(lib.geometry.sensors), proven against the research code's table to 0.01 cm. An as-built
table replaces positions and normals per run: sensor_geometry(path) -> SensorGeometry
(lib.geometry.sensor_table). Torch helpers (lib.geometry.maps) take x of shape
(B, 4760, C) and boolean masks of shape (B, 4760); they gather with cached per-device
index tensors and work for any dtype/device; torch is imported on their first call, so
the numpy constants load without it.
"""
from __future__ import annotations

from lib.geometry.sensors import (
    FACE_BOTTOM, FACE_DS, FACE_INNER, FACE_NAMES, FACE_OUTER, FACE_TOP, FACE_US, GRID_SHAPES, HEX_EDGES,
    HEX_NEIGHBORS, HEX_ROW_LENGTHS, IS_SIPM, N_HEX, N_SENSORS, NORMALS, OUTER_FINE_CELL_COUNT, OUTER_FINE_FACTOR,
    POSITIONS, SENSOR_FACE, face_ids, grid_ids, hex_ids,
)
from lib.geometry.maps import (
    face_index, flat_to_grid, flat_to_hex, grid_to_flat, hex_to_flat, mask_to_grid, mask_to_hex,
)
from lib.geometry.neighbours import NO_NEIGHBOUR, face_neighbours
from lib.geometry.sensor_table import NOMINAL_GEOMETRY, SensorGeometry, SensorTableError, sensor_geometry

__all__ = [
    "FACE_BOTTOM", "FACE_DS", "FACE_INNER", "FACE_NAMES", "FACE_OUTER", "FACE_TOP", "FACE_US", "GRID_SHAPES",
    "HEX_EDGES", "HEX_NEIGHBORS", "HEX_ROW_LENGTHS", "IS_SIPM", "N_HEX", "N_SENSORS", "NO_NEIGHBOUR", "NOMINAL_GEOMETRY",
    "NORMALS",
    "OUTER_FINE_CELL_COUNT", "OUTER_FINE_FACTOR", "POSITIONS", "SENSOR_FACE", "SensorGeometry", "SensorTableError",
    "face_ids", "face_index", "face_neighbours", "flat_to_grid", "flat_to_hex", "grid_to_flat", "grid_ids", "hex_ids", "hex_to_flat",
    "mask_to_grid", "mask_to_hex", "sensor_geometry",
]
