"""The light-collection (solid-angle) function shared by the simulator and the solid-angle inpainting baseline."""
from __future__ import annotations

import hashlib

import numpy as np

from lib import geometry as geo
from lib.geometry.light import PMT_AREA_CM2, SIPM_AREA_CM2, LightCollection, sensor_areas
from lib.sim import physics
from lib.sim.events import SimConfig, simulate_events

SIM_DIGEST_BEFORE_THE_MOVE = "bd5d3b2dc978901818942a1421350e870a06be5094321e80219b0ad6c6268d9f"
"""sha256 of npho, relative_time and timeTruth of simulate_events(SimConfig(), 64, default_rng(2024)), computed
with lib.sim.physics before the formula moved to lib.geometry.light (commit d818b8f, this machine's numpy)."""


def hand_fraction(point, sensor: int, area: float, efficiency: float = 1.0) -> float:
    """eps * A * cos(alpha) / (4 pi (d^2 + A / (2 pi))) in float64, written out."""
    offset = np.asarray(point, float) - geo.POSITIONS[sensor]
    distance = np.linalg.norm(offset)
    cos = max(float(offset @ geo.NORMALS[sensor]) / distance, 0.0)
    return efficiency * area * cos / (4 * np.pi * (distance**2 + area / (2 * np.pi)))


def test_fraction_matches_the_formula_on_axis_oblique_and_behind():
    light = LightCollection(geo.POSITIONS, geo.NORMALS, sensor_areas(), efficiency=0.5)
    sensor = 44 * 46 + 22  # an inner SiPM near the middle of the face
    on_axis = geo.POSITIONS[sensor] + 10.0 * geo.NORMALS[sensor]
    oblique = on_axis + np.array([0.0, 0.0, 7.0])
    behind = geo.POSITIONS[sensor] - 5.0 * geo.NORMALS[sensor]
    fraction, distance = light.fraction(np.stack([on_axis, oblique, behind]))
    assert fraction.shape == distance.shape == (3, geo.N_SENSORS) and fraction.dtype == np.float32
    assert np.isclose(fraction[0, sensor], 0.5 * SIPM_AREA_CM2 / (4 * np.pi * (100.0 + SIPM_AREA_CM2 / (2 * np.pi))),
                      rtol=1e-6)
    assert np.isclose(fraction[1, sensor], hand_fraction(oblique, sensor, SIPM_AREA_CM2, 0.5), rtol=1e-5)
    assert fraction[2, sensor] == 0.0  # light from behind the sensor
    assert np.isclose(distance[1, sensor], np.hypot(10.0, 7.0), rtol=1e-5)  # float32 |p|^2 - 2 p.s + |s|^2
    pmt = geo.face_ids("outer")[100]
    assert np.isclose(fraction[0, pmt], hand_fraction(on_axis, pmt, PMT_AREA_CM2, 0.5), rtol=1e-5)


def test_simulator_collects_light_through_the_shared_function():
    cfg = SimConfig()
    response = physics.SensorResponse(cfg, geo.NOMINAL_GEOMETRY)
    point = np.array([[[-75.0, 3.0, 2.0]]])  # one event, one deposit of 1 MeV at t = 0
    expected, _ = response.expected(point, np.ones((1, 1)), np.zeros((1, 1)))
    efficiency = np.where(geo.IS_SIPM, cfg.sipm_efficiency, cfg.pmt_efficiency)
    fraction, _ = LightCollection(geo.POSITIONS, geo.NORMALS, sensor_areas(), efficiency).fraction(point[0])
    np.testing.assert_array_equal(expected[0], fraction[0] * np.float32(cfg.light_yield_per_mev))
    for sensor in (0, 2000, 4200, 4600):
        assert np.isclose(fraction[0, sensor], hand_fraction(point[0, 0], sensor, sensor_areas()[sensor],
                                                             efficiency[sensor]), rtol=1e-5)


def test_simulator_output_is_bit_identical_to_before_the_move():
    events = simulate_events(SimConfig(), 64, np.random.default_rng(2024))
    digest = hashlib.sha256()
    for key in ("npho", "relative_time", "timeTruth"):
        digest.update(np.ascontiguousarray(events[key]).tobytes())
    assert digest.hexdigest() == SIM_DIGEST_BEFORE_THE_MOVE


def test_simulator_default_areas_are_the_geometry_constants():
    assert (SimConfig().sipm_area_cm2, SimConfig().pmt_area_cm2) == (SIPM_AREA_CM2, PMT_AREA_CM2)
    areas = sensor_areas()
    assert (areas[geo.IS_SIPM] == SIPM_AREA_CM2).all() and (areas[~geo.IS_SIPM] == PMT_AREA_CM2).all()
