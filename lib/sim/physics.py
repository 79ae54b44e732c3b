"""Physics of the toy gamma-shower simulation (used by lib.sim.events).

Physics model
-------------
Every simplification is deliberate: the goal is data on which energy, position,
time and angle are learnable and a classical estimator has a finite resolution.
Geometry (radii, face extents, the US/DS and top/bottom planes) is derived from
the sensor positions in lib.geometry; nothing here hard-codes a face.

1. Vertex: Gaussian around the origin, per-axis sigma ``vertex_sigma_cm``.
2. Direction: isotropic (uniform in cos(theta) and phi, theta from +z) within
   the inner face *as seen from the origin*, shrunk by ``acceptance_margin_cm``
   on every side (z range and arc length of the inner sensor centres). The vertex
   offset moves the hit point by a fraction of a cm; acceptance is not re-checked.
3. Energy: uniform in [min_mev, max_mev] or a line (``energy.spectrum``).
4. First interaction: the gamma enters the inner cylinder (r = r_inner) and
   converts after a path length drawn from an exponential of mean
   ``depth_mean_cm`` truncated at ``depth_max_cm`` (inverse-CDF sampling), both
   ALONG the flight direction. The truth depth w is radial (rho - r_inner), so
   slightly smaller than that path (incidence within ~25 deg of the normal).
5. Shower: ``n_deposits`` point deposits of equal energy E/n on the shower axis
   (the gamma direction, no transverse spread) at distances behind the first
   interaction drawn from the Longo-Sestili longitudinal profile, a Gamma law of
   shape 1 + b*t_max and scale X0/b, t_max = max(ln(E/E_c) - 0.5, 0), b = 0.5.
   Deposits outside the xenon volume (beyond the outer face, the US/DS planes or
   the top/bottom planes) leak: their energy gives no light. Nothing else leaks.
6. Light: each deposit emits ``light_yield_per_mev`` * E_dep photons
   isotropically (no absorption, Rayleigh scattering or reflections). A sensor
   of area A and efficiency eps collects the fraction
   eps * A * cos(alpha) / (4 pi (d^2 + A / (2 pi))): the inverse-square law with
   the cosine to the sensor's inward normal (zero for light from behind),
   softened so that a deposit touching a sensor gives at most half its light
   (the hemisphere limit); the formula lives in lib.geometry.light, shared with
   the solid-angle inpainting baseline. SiPM (inner face) and PMT (all others)
   have separate A and eps; the default PMT efficiency roughly evens out the light collection
   over depth. With the defaults, a linear calibration of the summed npho gives
   ~3.5% (central 68%) / ~5% (rms) energy resolution, the dominant term being
   the position dependence of the photo-coverage (denser top/bottom faces, the
   dense outer patch); at 52.8 MeV the hottest SiPM sees ~7e3 pe (median).
7. Counts: npho ~ Poisson(expected) in photo-electrons; above
   ``gaussian_above_npho`` expected pe a rounded Gaussian of the same mean and
   variance replaces it (close there, much faster). No gain fluctuation,
   cross-talk, dark counts, thresholds or saturation.
8. Time (ns inside this module, seconds in the output): emission at t = 0; each
   deposit happens at (flight path from the vertex, along the axis) / c. A
   sensor's true time is the light-weighted mean of (deposit time + d /
   ``light_speed_cm_per_ns``) over the deposits (sensors that see no light: the
   plain mean), smeared by a Gaussian of sigma ``time_jitter_ns`` /
   sqrt(max(npho, 1)) (scintillation decay and transit-time spread folded into
   one number; sensors with 0 pe still get a finite, very noisy time).
9. Detector defects: a fixed dead-sensor map per run (``dead_channel_mask``)
   and rare NaN entries (applied by lib.sim.events).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from lib import geometry
from lib.geometry.coordinates import azimuth, radius
from lib.geometry.light import LightCollection, sensor_areas
from lib.geometry.sensors import INNER_RADIUS

if TYPE_CHECKING:
    from lib.geometry.sensor_table import SensorGeometry
    from lib.sim.events import SimConfig

SPEED_OF_LIGHT_CM_PER_NS = 29.9792458
_LONGO_B = 0.5  # slope parameter b of the longitudinal profile


def _face_positions(face: int) -> np.ndarray:
    return geometry.POSITIONS[geometry.SENSOR_FACE == face]


def _end_plane(face: int) -> tuple[float, float]:
    """(z at r = 0, dz/dr) of the slanted line the US or DS PMTs sit on."""
    positions = _face_positions(face)
    slope, intercept = np.polyfit(radius(positions), positions[:, 2], 1)
    return float(intercept), float(slope)


# Volume and inner-face extent, all derived from the sensor positions in lib.geometry.
_INNER_POSITIONS = _face_positions(geometry.FACE_INNER)
R_OUTER = float(radius(_face_positions(geometry.FACE_OUTER)).mean())
INNER_PHI_RANGE = (float(azimuth(_INNER_POSITIONS).min()), float(azimuth(_INNER_POSITIONS).max()))
INNER_Z_RANGE = (float(_INNER_POSITIONS[:, 2].min()), float(_INNER_POSITIONS[:, 2].max()))
_VOLUME_PHI_RANGE = (float(azimuth(_face_positions(geometry.FACE_TOP)).mean()),
                     float(azimuth(_face_positions(geometry.FACE_BOTTOM)).mean()))
_US_PLANE, _DS_PLANE = _end_plane(geometry.FACE_US), _end_plane(geometry.FACE_DS)


def inside_volume(xyz: np.ndarray) -> np.ndarray:
    """Whether points (..., 3) lie in the xenon volume bounded by the six sensor faces."""
    r, phi, z = radius(xyz), azimuth(xyz), xyz[..., 2]
    return ((r >= INNER_RADIUS) & (r <= R_OUTER)
            & (phi >= _VOLUME_PHI_RANGE[0]) & (phi <= _VOLUME_PHI_RANGE[1])
            & (z >= _US_PLANE[0] + _US_PLANE[1] * r) & (z <= _DS_PLANE[0] + _DS_PLANE[1] * r))


def sample_energies(cfg: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Gamma energies in MeV, shape (n,)."""
    if cfg.energy.spectrum == "line":
        return np.full(n, cfg.energy.line_mev)
    return rng.uniform(cfg.energy.min_mev, cfg.energy.max_mev, n)


def sample_directions(cfg: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Isotropic unit vectors (n, 3) towards the inner face shrunk by acceptance_margin_cm, seen from the origin."""
    margin = cfg.acceptance_margin_cm
    cos_lo, cos_hi = (z / np.hypot(INNER_RADIUS, z) for z in (INNER_Z_RANGE[0] + margin, INNER_Z_RANGE[1] - margin))
    cos_theta = rng.uniform(cos_lo, cos_hi, n)
    phi = rng.uniform(INNER_PHI_RANGE[0] + margin / INNER_RADIUS, INNER_PHI_RANGE[1] - margin / INNER_RADIUS, n)
    sin_theta = np.sqrt(1.0 - cos_theta**2)
    return np.stack([sin_theta * np.cos(phi), sin_theta * np.sin(phi), cos_theta], axis=-1)


def entry_distance(vertex: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Path length (n,) from each vertex (inside the cylinder) to the inner face r = INNER_RADIUS."""
    a = direction[:, 0] ** 2 + direction[:, 1] ** 2
    b = 2.0 * (vertex[:, 0] * direction[:, 0] + vertex[:, 1] * direction[:, 1])
    c = vertex[:, 0] ** 2 + vertex[:, 1] ** 2 - INNER_RADIUS**2
    return (-b + np.sqrt(b * b - 4.0 * a * c)) / (2.0 * a)


def sample_conversion_paths(cfg: SimConfig, n: int, rng: np.random.Generator) -> np.ndarray:
    """Path lengths (n,) behind the inner face: exponential truncated at depth_max_cm."""
    keep = 1.0 - np.exp(-cfg.depth_max_cm / cfg.depth_mean_cm)
    return -cfg.depth_mean_cm * np.log1p(-keep * rng.random(n))


def sample_shower_offsets(cfg: SimConfig, energy_mev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Distances (n, n_deposits) of the deposits behind the first interaction along the axis."""
    t_max = np.maximum(np.log(energy_mev / cfg.critical_energy_mev) - 0.5, 0.0)
    shape = 1.0 + _LONGO_B * t_max
    return rng.gamma(shape[:, None], cfg.radiation_length_cm / _LONGO_B, (len(energy_mev), cfg.n_deposits))


class SensorResponse:
    """Expected light and arrival times of all sensors for point deposits (float32 throughout).

    `sensors` gives the sensor positions and normals (nominal or as-built); the xenon volume and the
    acceptance stay those of the nominal layout.
    """

    def __init__(self, cfg: SimConfig, sensors: SensorGeometry) -> None:
        self.cfg = cfg
        efficiency = np.where(geometry.IS_SIPM, cfg.sipm_efficiency, cfg.pmt_efficiency)
        self.light = LightCollection(sensors.positions, sensors.normals,
                                     sensor_areas(cfg.sipm_area_cm2, cfg.pmt_area_cm2), efficiency)

    def expected(self, deposit_xyz: np.ndarray, deposit_mev: np.ndarray,
                 deposit_time_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Expected pe (n, S) and light-weighted true arrival time in ns (n, S).

        deposit_xyz (n, K, 3) cm, deposit_mev (n, K), deposit_time_ns (n, K).
        """
        n, k = deposit_mev.shape
        fraction, dist = self.light.fraction(deposit_xyz.reshape(n * k, 3))
        photons_per_mev = (deposit_mev * self.cfg.light_yield_per_mev).astype(np.float32)
        light = fraction.reshape(n, k, -1)
        light *= photons_per_mev[:, :, None]
        expected = light.sum(axis=1)
        arrival = dist.reshape(n, k, -1)
        arrival *= np.float32(1.0 / self.cfg.light_speed_cm_per_ns)
        arrival += deposit_time_ns.astype(np.float32)[:, :, None]
        weighted = np.einsum("nks,nks->ns", light, arrival)
        unseen = expected <= 0
        mean_time = np.where(unseen, arrival.mean(axis=1), weighted / np.where(unseen, 1.0, expected))
        return expected, mean_time


def sample_counts(expected: np.ndarray, gaussian_above: float, rng: np.random.Generator) -> np.ndarray:
    """Photo-electron counts (float32): Poisson, rounded Gaussian where expected > gaussian_above."""
    counts = np.empty_like(expected)
    large = expected > gaussian_above
    counts[~large] = rng.poisson(expected[~large])
    mean = expected[large]
    counts[large] = np.rint(mean + np.sqrt(mean) * rng.standard_normal(mean.shape, dtype=np.float32))
    return counts


def dead_channel_mask(run: int, fraction: float) -> np.ndarray:
    """Dead sensors (S,) bool for a run: round(fraction * S) ids drawn from a generator seeded by the run.

    The same run number gives the same dead map in every shard and data set (train/val).
    """
    rng = np.random.default_rng([run, 0xDEAD])
    dead = np.zeros(geometry.N_SENSORS, dtype=bool)
    dead[rng.choice(geometry.N_SENSORS, round(fraction * geometry.N_SENSORS), replace=False)] = True
    return dead
