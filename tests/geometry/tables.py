"""Research-code sensor tables (fixtures in tests/geometry/data) and sensor-table files for tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from lib import geometry as geo

DATA = Path(__file__).parent / "data"


def research_positions() -> np.ndarray:
    """(4760, 3) positions of the research table, expanded from the fixture's compact inner-face lines."""
    positions = np.full((geo.N_SENSORS, 3), np.nan)
    inner_rows, inner_cols = {}, {}
    for line in (DATA / "research_sensor_positions.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        kind, *values = line.split()
        if kind == "inner_row":
            inner_rows[int(values[0])] = [float(v) for v in values[1:]]
        elif kind == "inner_col":
            inner_cols[int(values[0])] = float(values[1])
        else:
            assert np.isnan(positions[int(kind)]).all(), f"sensor {kind} listed twice"
            positions[int(kind)] = [float(v) for v in values]
    assert sorted(inner_rows) == list(range(93)) and sorted(inner_cols) == list(range(44))
    for row, (x, y) in inner_rows.items():
        for col, z in inner_cols.items():
            positions[44 * row + col] = x, y, z
    assert not np.isnan(positions).any(), "the fixture must give every sensor"
    return positions


def research_as_built() -> dict[str, np.ndarray]:
    """ids, directions, positions and face codes of the as-built excerpt (MEG run header)."""
    table = np.loadtxt(DATA / "research_sensor_directions_excerpt.txt")
    return {"ids": table[:, 0].astype(int), "directions": table[:, 1:4], "positions": table[:, 4:7],
            "faces": table[:, 7].astype(int)}


def write_table(path: Path, positions: np.ndarray, normals: np.ndarray | None = None, order=None) -> Path:
    """A table in the documented format, one '# comment' line and the sensors in `order` (default: by id)."""
    ids = np.arange(geo.N_SENSORS) if order is None else np.asarray(order)
    columns = [positions] if normals is None else [positions, normals]
    values = np.concatenate(columns, axis=1)[ids]
    lines = ["# as-built test table: id x y z [nx ny nz] (cm)"]
    lines += [" ".join([str(sensor)] + [repr(float(v)) for v in row]) for sensor, row in zip(ids, values)]
    path.write_text("\n".join(lines) + "\n")
    return path


def as_built_table() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nominal positions and normals with the 246 as-built sensors of the MEG run header in place."""
    as_built = research_as_built()
    positions, normals = geo.POSITIONS.copy(), geo.NORMALS.copy()
    positions[as_built["ids"]] = as_built["positions"]
    normals[as_built["ids"]] = as_built["directions"]
    return positions, normals, as_built["ids"]
