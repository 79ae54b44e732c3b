"""geometry.sensor_table: an as-built table replaces the nominal positions/normals, or is refused in one line."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from lib import geometry as geo
from lib.config import ConfigError, GeometryConfig, MAEConfig, RegressorConfig
from lib.geometry.sensor_table import MAX_SHIFT_CM
from tests.geometry.tables import as_built_table, write_table


def test_no_table_is_the_nominal_layout():
    nominal = geo.sensor_geometry(None)
    assert nominal is geo.NOMINAL_GEOMETRY and nominal.source == "nominal"
    assert nominal.positions is geo.POSITIONS and nominal.normals is geo.NORMALS
    assert len(nominal.digest) == 16


def test_as_built_table_replaces_positions_and_normals(tmp_path, caplog):
    positions, normals, changed = as_built_table()
    order = np.random.default_rng(0).permutation(geo.N_SENSORS)  # any line order
    path = write_table(tmp_path / "as_built.txt", positions, normals, order)
    with caplog.at_level(logging.INFO, logger="lib.geometry.sensor_table"):
        table = geo.sensor_geometry(path)
    np.testing.assert_array_equal(table.positions, positions)
    np.testing.assert_allclose(table.normals, normals / np.linalg.norm(normals, axis=1, keepdims=True))
    assert table.source == str(path) and table.digest != geo.NOMINAL_GEOMETRY.digest
    assert not table.positions.flags.writeable and not table.normals.flags.writeable
    assert "largest shift 1.04 cm" in caplog.text  # the inner face of the run header is the most displaced
    assert np.linalg.norm(table.positions[changed] - geo.POSITIONS[changed], axis=1).max() < MAX_SHIFT_CM


def test_table_without_normals_keeps_the_nominal_ones(tmp_path):
    table = geo.sensor_geometry(write_table(tmp_path / "t.txt", geo.POSITIONS))
    assert table.normals is geo.NORMALS
    assert table.digest == geo.NOMINAL_GEOMETRY.digest  # same values: same geometry for checkpoints


def _error(path: Path) -> str:
    with pytest.raises(geo.SensorTableError) as caught:
        geo.sensor_geometry(path)
    message = str(caught.value)
    assert isinstance(caught.value, ConfigError) and "\n" not in message and str(path) in message
    return message


def _lines(path: Path, edit) -> Path:
    """The nominal table with `edit(lines)` applied to its list of text lines (line 1 is the comment)."""
    lines = write_table(path, geo.POSITIONS, geo.NORMALS).read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def _set(lines: list[str], sensor: int, text: str) -> None:
    lines[sensor + 1] = text


BAD_EDITS = [  # (edit of the nominal table, text the one-line error must contain)
    (lambda lines: _set(lines, 5, "5 1.0 2.0"), r"t.txt:7: 3 fields; expected 'id x y z' or 'id x y z nx ny nz'"),
    (lambda lines: _set(lines, 5, "5 -30.4 57.4 -24.9"), "4 fields but earlier lines have 7"),
    (lambda lines: _set(lines, 5, "five -30.4 57.4 -24.9 1 0 0"), "sensor id 'five' is not an integer"),
    (lambda lines: _set(lines, 5, "5 -30.4 57.4 abc 1 0 0"), "could not convert string to float: 'abc'"),
    (lambda lines: _set(lines, 5, "4760 -30.4 57.4 -24.9 1 0 0"), "t.txt:7: sensor id 4760 is outside 0-4759"),
    (lambda lines: _set(lines, 5, lines[4 + 1]), "t.txt:7: sensor id 4 appears again (first on line 6)"),
    (lambda lines: lines.pop(9), "1 of the 4760 sensors are missing (ids [8])"),
    (lambda lines: _set(lines, 5, "5 nan 57.4 -24.9 1 0 0"), "t.txt:7: sensor 5 (inner face): non-finite position"),
    (lambda lines: _set(lines, 5, "5 -30.4 57.4 -24.9 0 0 0"), "normal [0.0, 0.0, 0.0] has no direction"),
]


@pytest.mark.parametrize("edit,expected", BAD_EDITS)
def test_malformed_tables_are_refused_with_the_line(tmp_path, edit, expected):
    assert expected in _error(_lines(tmp_path / "t.txt", edit))


def test_tables_off_the_detector_are_refused(tmp_path):
    message = _error(write_table(tmp_path / "mm.txt", geo.POSITIONS * 10.0))  # millimetres
    assert "mm.txt:2: sensor 0 (inner face)" in message and "(4759 more sensors like it)" in message
    assert "more than 3 cm" in message and "10 times too large (mm?)" in message
    swapped = geo.POSITIONS.copy()
    swapped[[100, 4200]] = swapped[[4200, 100]]
    message = _error(write_table(tmp_path / "swapped.txt", swapped))
    assert "swapped.txt:102: sensor 100 (inner face)" in message and "(1 more sensors like it)" in message
    reversed_normals = geo.NORMALS.copy()
    reversed_normals[4600] *= -1
    message = _error(write_table(tmp_path / "reversed.txt", geo.POSITIONS, reversed_normals))
    assert "sensor 4600 (top face): normal" in message and "180.0 deg from the nominal" in message
    tilted = geo.NORMALS.copy()
    tilted[4300] = geo.NORMALS[4300] + [0.0, 0.0, np.tan(np.radians(6.0))]  # outer normal tilted 6 deg up
    assert "6.0 deg from the nominal" in _error(write_table(tmp_path / "tilted.txt", geo.POSITIONS, tilted))


def test_missing_and_empty_files_are_refused(tmp_path):
    assert "file not found; set geometry.sensor_table" in _error(tmp_path / "nowhere.txt")
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    assert "no sensor lines" in _error(tmp_path / "empty.txt")


def test_geometry_config_section():
    assert GeometryConfig().sensor_table is None
    assert MAEConfig().geometry == RegressorConfig().geometry == GeometryConfig()
    cfg = RegressorConfig.model_validate({"geometry": {"sensor_table": "as_built.txt"}})
    assert cfg.geometry.sensor_table == "as_built.txt"
    with pytest.raises(ValidationError, match="empty; give a file path, or null"):
        GeometryConfig(sensor_table=" ")
    with pytest.raises(ValidationError, match="sensor_tabel"):
        MAEConfig.model_validate({"geometry": {"sensor_tabel": "x.txt"}})
