"""Tests of the toy simulation: shapes, determinism, truth consistency, physics sanity, I/O."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import uproot

from lib import geometry
from lib.config.load import ConfigError
from lib.geometry import SensorTableError
from lib.sim.__main__ import main
from lib.sim.events import (
    DEAD_VALUE,
    SimConfig,
    load_sim_config,
    simulate_events,
    write_shards,
)
from tests.geometry.tables import as_built_table, write_table

N_EVENTS = 400
VECTOR_SIZES = {"npho": geometry.N_SENSORS, "relative_time": geometry.N_SENSORS, "uvwTruth": 3, "xyzTruth": 3,
                "emiAng": 2, "emiVec": 3, "xyzVTX": 3}
SCALAR_DTYPES = {"energyTruth": np.float32, "timeTruth": np.float32, "run": np.int32, "event": np.int64}

R_INNER = 64.84 + 0.13  # MEG: inner spacer radius + MPPC height


def _meg_v(xyz: np.ndarray) -> np.ndarray:
    """MEG's v = -(phi - pi) * R_in, phi = atan2(y, x) in [0, 2 pi)."""
    return -(np.mod(np.arctan2(xyz[:, 1], xyz[:, 0]), 2 * np.pi) - np.pi) * R_INNER


def _live(events: dict[str, np.ndarray]) -> np.ndarray:
    return np.isfinite(events["npho"]) & (events["npho"] < 1e9)


@pytest.fixture(scope="module")
def cfg() -> SimConfig:
    return SimConfig()


@pytest.fixture(scope="module")
def events(cfg) -> dict[str, np.ndarray]:
    return simulate_events(cfg, N_EVENTS, np.random.default_rng(123))


def test_shapes_and_dtypes(events):
    assert set(events) == set(VECTOR_SIZES) | set(SCALAR_DTYPES)
    for key, size in VECTOR_SIZES.items():
        assert events[key].shape == (N_EVENTS, size), key
        assert events[key].dtype == np.float32, key
    for key, dtype in SCALAR_DTYPES.items():
        assert events[key].shape == (N_EVENTS,), key
        assert events[key].dtype == dtype, key
    np.testing.assert_array_equal(events["event"], np.arange(N_EVENTS))


def test_same_seed_is_bit_identical_and_seeds_differ(cfg):
    first, again, other = (simulate_events(cfg, 20, np.random.default_rng(seed)) for seed in (7, 7, 8))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])  # NaN == NaN here
    assert not np.array_equal(first["energyTruth"], other["energyTruth"])
    assert not np.array_equal(first["npho"], other["npho"], equal_nan=True)


def test_energy_range_and_line(cfg, events):
    energy_mev = events["energyTruth"] * 1e3
    assert energy_mev.min() >= cfg.energy.min_mev - 1e-3 and energy_mev.max() <= cfg.energy.max_mev + 1e-3
    assert energy_mev.std() > 5.0
    line = SimConfig(energy={"spectrum": "line", "line_mev": 52.8})
    np.testing.assert_allclose(simulate_events(line, 5, np.random.default_rng(0))["energyTruth"], 0.0528)


def test_truth_coordinates_are_consistent(events):
    xyz, uvw = events["xyzTruth"].astype(np.float64), events["uvwTruth"].astype(np.float64)
    np.testing.assert_allclose(uvw[:, 0], xyz[:, 2], atol=1e-4)  # u = z
    np.testing.assert_allclose(uvw[:, 1], _meg_v(xyz), atol=1e-3)  # v: arc length from -x, MEG's sign
    assert ((uvw[:, 1] > 0) == (xyz[:, 1] > 0)).all(), "v > 0 on the +y side"
    radial_depth = np.hypot(xyz[:, 0], xyz[:, 1]) - R_INNER
    np.testing.assert_allclose(uvw[:, 2], radial_depth, atol=1e-3)  # w: radial depth
    assert (uvw[:, 2] > 0).all(), "first interaction must lie behind the inner face"
    assert (xyz[:, 0] < 0).all(), "detector is on the -x side"


def test_direction_vertex_and_conversion_depth(cfg, events):
    vec, vertex = events["emiVec"].astype(np.float64), events["xyzVTX"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)
    theta, phi = np.radians(events["emiAng"].astype(np.float64)).T  # MEG: phi = atan2(y, -x)
    expected = np.stack([-np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)], axis=1)
    np.testing.assert_allclose(expected, vec, atol=1e-5)
    assert (np.abs(events["emiAng"][:, 1]) < 90).all(), "towards the detector (-x), |phi| < 90 deg"
    np.testing.assert_allclose(vertex.std(axis=0), cfg.vertex_sigma_cm, rtol=0.2)
    assert np.abs(vertex.mean(axis=0)).max() < 0.15
    # the first interaction lies on the ray from the vertex along emiVec ...
    along = events["xyzTruth"] - vertex
    np.testing.assert_allclose(np.cross(along, vec), 0.0, atol=1e-3)
    assert ((along * vec).sum(axis=1) > 0).all()
    # ... behind the entry point into the inner cylinder by an exponential path of the configured mean
    b = (vertex[:, :2] * vec[:, :2]).sum(axis=1)
    a = (vec[:, :2] ** 2).sum(axis=1)
    entry = (-b + np.sqrt(b**2 - a * ((vertex[:, :2] ** 2).sum(axis=1) - R_INNER**2))) / a
    path = np.linalg.norm(along, axis=1) - entry
    assert (path > 0).all() and path.max() <= cfg.depth_max_cm + 1e-3
    mean, cut = cfg.depth_mean_cm, cfg.depth_max_cm
    truncated_mean = mean - cut * np.exp(-cut / mean) / (1 - np.exp(-cut / mean))
    assert abs(path.mean() - truncated_mean) < 3 * mean / np.sqrt(N_EVENTS)


def test_total_light_is_linear_in_energy(events):
    total = np.where(_live(events), events["npho"], 0.0).sum(axis=1)
    energy = events["energyTruth"]
    assert np.corrcoef(energy, total)[0, 1] > 0.95
    slope, offset = np.polyfit(total, energy, 1)
    assert slope > 0
    residual = (slope * total + offset - energy) / energy
    assert np.percentile(np.abs(residual), 68) < 0.06


def test_hottest_inner_sensor_is_near_truth(events):
    inner_ids = geometry.grid_ids("inner").ravel()
    light = np.where(_live(events), events["npho"], -1.0)[:, inner_ids]
    hottest = geometry.POSITIONS[inner_ids[light.argmax(axis=1)]]
    distance = np.hypot(hottest[:, 2] - events["uvwTruth"][:, 0], _meg_v(hottest) - events["uvwTruth"][:, 1])
    assert np.mean(distance < 3.0) > 0.9


def test_relative_time_reference_and_time_truth(cfg, events):
    live = _live(events)
    referenced = np.where(live & (events["npho"] > cfg.time_reference_min_npho), events["relative_time"], np.inf)
    np.testing.assert_array_equal(referenced.min(axis=1), 0.0)
    times = events["relative_time"][live & (events["npho"] > 100)]
    assert 1e-10 < np.percentile(times, 50) < 1e-8  # seconds
    # the hottest sensor fires at timeTruth + its distance to the first interaction / light speed (to ~ps-ns)
    hottest = np.where(live, events["npho"], -1.0).argmax(axis=1)
    distance = np.linalg.norm(geometry.POSITIONS[hottest] - events["xyzTruth"], axis=1)
    predicted = events["timeTruth"] + distance / cfg.light_speed_cm_per_ns * 1e-9
    residual = events["relative_time"][np.arange(N_EVENTS), hottest] - predicted
    assert abs(np.median(residual)) < 0.5e-9


def test_time_reference_is_never_a_nan_entry():
    cfg = SimConfig(nan_fraction=0.009)
    events = simulate_events(cfg, 200, np.random.default_rng(5))
    live = _live(events)
    referenced = np.where(live & (events["npho"] > cfg.time_reference_min_npho), events["relative_time"], np.inf)
    np.testing.assert_array_equal(referenced.min(axis=1), 0.0)


def test_dead_channels_per_run(cfg, events):
    dead = (events["npho"] == DEAD_VALUE).all(axis=0)
    assert dead.sum() == round(cfg.dead_fraction * geometry.N_SENSORS)
    assert (events["relative_time"][:, dead] == DEAD_VALUE).all()
    assert not (events["npho"][:, ~dead] == DEAD_VALUE).any()
    same_run = simulate_events(cfg, 3, np.random.default_rng(99))["npho"] == DEAD_VALUE
    np.testing.assert_array_equal(same_run.all(axis=0), dead)
    other_run = simulate_events(SimConfig(run_number=2), 3, np.random.default_rng(99))
    assert not np.array_equal((other_run["npho"] == DEAD_VALUE).all(axis=0), dead)
    assert (other_run["run"] == 2).all()


def test_nan_entries_are_rare(events):
    nan = np.isnan(events["npho"])
    np.testing.assert_array_equal(nan, np.isnan(events["relative_time"]))
    assert 0 < nan.mean() < 1e-3
    dead = (events["npho"] == DEAD_VALUE).all(axis=0)
    assert not nan[:, dead].any()


def _write(tmp_path, fmt: str, **overrides) -> list:
    cfg = SimConfig(chunk_events=8, **overrides)
    return write_shards(cfg, tmp_path / fmt, n_events=30, n_shards=2, fmt=fmt, seed=5)


def test_root_and_npz_round_trip(tmp_path):
    root_paths, npz_paths = _write(tmp_path, "root"), _write(tmp_path, "npz")
    assert [p.name for p in root_paths] == ["shard_0000.root", "shard_0001.root"]
    assert [p.name for p in npz_paths] == ["shard_0000.npz", "shard_0001.npz"]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["shard_0000.root", "shard_0001.root"]
    events = []
    for root_path, npz_path in zip(root_paths, npz_paths):
        tree = uproot.open(root_path)["tree"]
        assert set(tree.keys()) == set(VECTOR_SIZES) | set(SCALAR_DTYPES)
        arrays = tree.arrays(library="np")
        with np.load(npz_path) as npz:
            assert set(npz.files) == set(tree.keys())
            for key in tree.keys():
                expected_shape = (tree.num_entries,) + ((VECTOR_SIZES[key],) if key in VECTOR_SIZES else ())
                assert arrays[key].shape == expected_shape, key
                assert arrays[key].dtype == SCALAR_DTYPES.get(key, np.float32), key
                np.testing.assert_array_equal(arrays[key], npz[key])  # same seed -> same content
        events.append(arrays["event"])
    np.testing.assert_array_equal(np.concatenate(events), np.arange(30))
    first, second = (uproot.open(p)["tree"]["energyTruth"].array(library="np") for p in root_paths)
    assert not np.isin(first, second).any(), "shards must use independent random streams"


def test_refuses_to_overwrite(tmp_path):
    (path,) = write_shards(SimConfig(), tmp_path, n_events=4, n_shards=1, fmt="npz", seed=1)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="shard_0000.npz"):
        write_shards(SimConfig(), tmp_path, n_events=4, n_shards=1, fmt="npz", seed=2)
    assert path.read_bytes() == before


def test_config_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("evnts: 10\nenergy:\n  min_mev: 70\n")
    with pytest.raises(ConfigError, match=r"(?s)bad\.yaml.*evnts.*did you mean 'events'"):
        load_sim_config(bad)
    bad.write_text("energy:\n  min_mev: 70\n")
    with pytest.raises(ConfigError, match="min_mev"):
        load_sim_config(bad)
    with pytest.raises(ConfigError, match="shards"):
        load_sim_config(None, {"events": 2, "shards": 3})
    with pytest.raises(ConfigError, match="not found"):
        load_sim_config(tmp_path / "missing.yaml")


def test_cli_flags_override_yaml(tmp_path, caplog):
    config = tmp_path / "sim.yaml"
    config.write_text("events: 50\nshards: 3\nformat: root\nnan_fraction: 1e-3\n")
    with caplog.at_level(logging.INFO):
        main(["--config", str(config), "--out", str(tmp_path / "out"), "--events", "6", "--shards", "2",
              "--format", "npz", "--seed", "4"])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["shard_0000.npz", "shard_0001.npz"]
    assert "events/s" in caplog.text
    with pytest.raises(SystemExit):
        main(["--config", str(config), "--out", str(tmp_path / "out"), "--events", "6", "--shards", "2",
              "--format", "npz"])


def test_demo_config_validates():
    cfg = load_sim_config(Path(__file__).parents[2] / "config" / "sim" / "demo.yaml")
    assert cfg.events >= cfg.shards > 1


def test_sensor_table_moves_the_sensors_of_the_simulation(tmp_path):
    nominal_table = write_table(tmp_path / "nominal.txt", geometry.POSITIONS, geometry.NORMALS)
    positions, normals, changed = as_built_table()
    as_built = write_table(tmp_path / "as_built.txt", positions, normals)
    nominal = simulate_events(SimConfig(), 30, np.random.default_rng(3))
    same = simulate_events(SimConfig(sensor_table=str(nominal_table)), 30, np.random.default_rng(3))
    moved = simulate_events(SimConfig(sensor_table=str(as_built)), 30, np.random.default_rng(3))
    for key in nominal:
        np.testing.assert_array_equal(same[key], nominal[key])
    np.testing.assert_array_equal(moved["uvwTruth"], nominal["uvwTruth"])  # same showers ...
    unchanged = np.setdiff1d(np.arange(geometry.N_SENSORS), changed)
    assert not np.array_equal(moved["npho"][:, changed], nominal["npho"][:, changed])  # ... seen by moved sensors
    mean_change = np.nanmean(np.abs(moved["npho"][:, unchanged] - nominal["npho"][:, unchanged]))
    assert mean_change < np.nanmean(np.abs(moved["npho"][:, changed] - nominal["npho"][:, changed]))


def test_bad_sensor_table_fails_before_writing(tmp_path, capsys):
    table = tmp_path / "mm.txt"
    table.write_text("".join(f"{i} {x * 10} {y * 10} {z * 10}\n" for i, (x, y, z) in enumerate(geometry.POSITIONS)))
    with pytest.raises(SensorTableError, match="mm.txt:1: sensor 0"):
        write_shards(SimConfig(sensor_table=str(table)), tmp_path / "out", n_events=4, n_shards=1)
    assert not (tmp_path / "out").exists()
    config = tmp_path / "sim.yaml"
    config.write_text(f"sensor_table: {tmp_path / 'missing.txt'}\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--out", str(tmp_path / "out"), "--events", "4", "--shards", "1"])
    assert exit_info.value.code == 2
    assert "geometry.sensor_table" in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("case", ["bad yaml", "unwritable out"])
def test_cli_input_errors_are_one_line(tmp_path, capsys, case):
    config = tmp_path / "sim.yaml"
    config.write_text("events: [4\n" if case == "bad yaml" else "events: 4\nshards: 1\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    out = tmp_path / "out" if case == "bad yaml" else blocker / "out"  # a path under a file
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert ("sim.yaml: invalid YAML at line 2" if case == "bad yaml" else "Not a directory") in err


def _total_light(events: dict[str, np.ndarray]) -> np.ndarray:
    return np.where(_live(events), events["npho"], 0.0).sum(axis=1)


def test_pileup_adds_a_second_gammas_light_to_a_fraction_of_the_events(events):
    piled = simulate_events(SimConfig(pileup_fraction=0.3), N_EVENTS, np.random.default_rng(123))
    for key in ("energyTruth", "uvwTruth", "emiVec", "xyzVTX"):  # the truth stays the first gamma's
        np.testing.assert_array_equal(piled[key], events[key], err_msg=key)
    ratio = _total_light(piled) / _total_light(events)
    assert np.all(ratio > 0.9)
    assert abs(np.mean(ratio > 1.15) - 0.3) < 0.08  # a second gamma of >= 15 MeV adds >= ~25 % light
    assert abs(np.median(ratio) - 1) < 0.05


def test_light_yield_gradient_makes_the_light_per_mev_depend_on_z(events):
    graded = simulate_events(SimConfig(light_yield_gradient=0.2), N_EVENTS, np.random.default_rng(123))
    np.testing.assert_array_equal(graded["uvwTruth"], events["uvwTruth"])
    ratio = _total_light(graded) / _total_light(events)
    z = events["xyzTruth"][:, 2]
    slope = np.polyfit(z / np.abs(z).max(), ratio, 1)[0]
    assert 0.1 < slope < 0.3  # 1 + 0.2 z / half-height, the showers spread a little along z


def test_realistic_config_turns_the_realism_on_and_the_demo_keeps_it_off():
    configs = Path(__file__).parents[2] / "config" / "sim"
    realistic, demo = (load_sim_config(configs / f"{name}.yaml") for name in ("realistic", "demo"))
    assert realistic.pileup_fraction > 0 and realistic.light_yield_gradient != 0
    assert demo.pileup_fraction == 0 and demo.light_yield_gradient == 0
