"""Sensor geometry of a run: the nominal layout, or an as-built table (`geometry.sensor_table`) replacing it.

A sensor table is a text file with one line per sensor, all 4760 of them, in any order:

    id x y z [nx ny nz]

in cm, in the detector frame of lib.geometry; (nx, ny, nz) is the normal pointing into the
xenon (any length; normalized here). Either every line has a normal or none has (then the
nominal normals are kept). '#' starts a comment. Each sensor must stay within MAX_SHIFT_CM of
its nominal place and its normal within MAX_TILT_DEG of the nominal one, so a table in mm, in
another frame, with swapped ids or reversed normals is refused with a one-line error naming the
file, the line, the sensor and what to change. `sensor_geometry(None)` is the nominal layout.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib.config.load import ConfigError
from lib.geometry.sensors import FACE_NAMES, N_SENSORS, NORMALS, POSITIONS, SENSOR_FACE

log = logging.getLogger(__name__)

MAX_SHIFT_CM = 3.0
"""Largest distance (cm) of a tabulated sensor from its nominal place."""
MAX_TILT_DEG = 5.0
"""Largest angle (degrees) between a tabulated normal and the nominal one."""
_WIDTHS = (4, 7)


class SensorTableError(ConfigError):
    """A sensor table is unreadable or inconsistent with the detector; the message says where and what to change."""


@dataclass(frozen=True, eq=False)
class SensorGeometry:
    """Positions (4760, 3) cm and unit inward normals (4760, 3) of every sensor, indexed by id (read-only).

    Compare two geometries by `digest` (what a checkpoint records), not with ==.
    """

    positions: np.ndarray
    normals: np.ndarray
    source: str
    """Either "nominal" or the path of the table the values come from."""

    @property
    def digest(self) -> str:
        """Short hash of the values: equal digests mean the same geometry (for checkpoint compatibility)."""
        data = np.ascontiguousarray(self.positions, np.float64).tobytes()
        data += np.ascontiguousarray(self.normals, np.float64).tobytes()
        return hashlib.sha256(data).hexdigest()[:16]


NOMINAL_GEOMETRY = SensorGeometry(POSITIONS, NORMALS, "nominal")


def sensor_geometry(table_path: str | Path | None = None) -> SensorGeometry:
    """The sensor geometry to use: NOMINAL_GEOMETRY for None, else the validated table at `table_path`.

    Raises SensorTableError (a ConfigError) with a one-line message on any problem.
    """
    if table_path is None:
        return NOMINAL_GEOMETRY
    path = Path(table_path)
    ids, values, lines = _read_table(path)
    _check_ids(path, ids, lines)
    order = np.argsort(ids)
    values, lines = values[order], lines[order]
    positions = np.ascontiguousarray(values[:, :3])
    shift = _check_positions(path, positions, lines)
    normals, tilt = (NORMALS, 0.0) if values.shape[1] == 3 else _check_normals(path, values[:, 3:], lines)
    log.info("sensor geometry from %s: largest shift %.2f cm, largest normal tilt %.2f deg", path, shift, tilt)
    positions.setflags(write=False)
    normals.setflags(write=False)
    return SensorGeometry(positions, normals, str(path))


def _fail(path: Path, message: str, line: int | None = None) -> SensorTableError:
    where = f"{path}:{line}" if line is not None else str(path)
    return SensorTableError(f"geometry.sensor_table {where}: {message}")


def _read_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, values (n, 3 or 6), line numbers) of the data lines, with syntax errors reported by line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _fail(path, "file not found; set geometry.sensor_table to an existing file, or null for the "
                    "nominal layout") from None
    except (OSError, UnicodeDecodeError) as err:
        raise _fail(path, f"cannot read the file ({err}); give a text file of 'id x y z [nx ny nz]' lines") from None
    ids, rows, lines, width = [], [], [], None
    for number, raw in enumerate(text.splitlines(), 1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) not in _WIDTHS:
            raise _fail(path, f"{len(fields)} fields; expected 'id x y z' or 'id x y z nx ny nz' (cm)", number)
        if width is not None and len(fields) != width:
            raise _fail(path, f"{len(fields)} fields but earlier lines have {width}; give every sensor a normal "
                        "or none", number)
        width = len(fields)
        try:
            ids.append(int(fields[0]))
        except ValueError:
            raise _fail(path, f"sensor id {fields[0]!r} is not an integer", number) from None
        try:
            rows.append([float(field) for field in fields[1:]])
        except ValueError as err:
            raise _fail(path, f"{err}; every coordinate must be a number in cm", number) from None
        lines.append(number)
    if not ids:
        raise _fail(path, f"no sensor lines; expected {N_SENSORS} lines of 'id x y z [nx ny nz]'")
    return np.asarray(ids), np.asarray(rows, dtype=np.float64), np.asarray(lines)


def _check_ids(path: Path, ids: np.ndarray, lines: np.ndarray) -> None:
    outside = np.flatnonzero((ids < 0) | (ids >= N_SENSORS))
    if outside.size:
        raise _fail(path, f"sensor id {ids[outside[0]]} is outside 0-{N_SENSORS - 1}", lines[outside[0]])
    first_line = {}
    for sensor, line in zip(ids.tolist(), lines.tolist()):
        if sensor in first_line:
            raise _fail(path, f"sensor id {sensor} appears again (first on line {first_line[sensor]}); list each "
                        "sensor once", line)
        first_line[sensor] = line
    if len(ids) != N_SENSORS:
        missing = np.setdiff1d(np.arange(N_SENSORS), ids)
        raise _fail(path, f"{len(missing)} of the {N_SENSORS} sensors are missing (ids {missing[:5].tolist()}"
                    f"{' ...' if len(missing) > 5 else ''}); the table must list every sensor")


def _first_bad(path: Path, bad: np.ndarray, lines: np.ndarray, message) -> None:
    """Raise for the first sensor flagged in `bad` (message(sensor) describes it), counting the others."""
    flagged = np.flatnonzero(bad)
    if flagged.size:
        sensor = int(flagged[0])
        others = f" ({flagged.size - 1} more sensors like it)" if flagged.size > 1 else ""
        raise _fail(path, f"sensor {sensor} ({FACE_NAMES[SENSOR_FACE[sensor]]} face): {message(sensor)}{others}",
                    int(lines[sensor]))


def _check_positions(path: Path, positions: np.ndarray, lines: np.ndarray) -> float:
    """Largest shift from the nominal places (cm), after refusing non-finite values and shifts > MAX_SHIFT_CM."""
    _first_bad(path, ~np.isfinite(positions).all(axis=1), lines,
               lambda s: f"non-finite position {positions[s].tolist()}; give finite coordinates in cm")
    shift = np.linalg.norm(positions - POSITIONS, axis=1)
    scale = np.median(np.linalg.norm(positions, axis=1)) / np.median(np.linalg.norm(POSITIONS, axis=1))
    hint = f"the table looks {scale:.3g} times too large (mm?)" if scale > 2 else "check the frame and the ids"
    _first_bad(path, shift > MAX_SHIFT_CM, lines,
               lambda s: f"{shift[s]:.2f} cm from its nominal place {np.round(POSITIONS[s], 2).tolist()}, more than "
               f"{MAX_SHIFT_CM:g} cm; positions are in cm in the MEG frame ({hint})")
    return float(shift.max())


def _check_normals(path: Path, normals: np.ndarray, lines: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit normals and their largest tilt from nominal (degrees), after refusing bad ones."""
    length = np.linalg.norm(normals, axis=1)
    _first_bad(path, ~(np.isfinite(length) & (length > 1e-9)), lines,
               lambda s: f"normal {normals[s].tolist()} has no direction; give a finite, non-zero vector")
    unit = normals / length[:, None]
    tilt = np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", unit, NORMALS), -1.0, 1.0)))
    _first_bad(path, tilt > MAX_TILT_DEG, lines,
               lambda s: f"normal {np.round(unit[s], 3).tolist()} is {tilt[s]:.1f} deg from the nominal "
               f"{np.round(NORMALS[s], 3).tolist()}, more than {MAX_TILT_DEG:g} deg; normals point into the xenon")
    return unit, float(tilt.max())
