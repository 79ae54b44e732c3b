"""Light collection: the fraction of the isotropic light of a point that each sensor collects.

A sensor of area A and efficiency eps at distance d collects the fraction

    eps * A * cos(alpha) / (4 pi (d^2 + A / (2 pi)))

of the light a point emits into 4 pi: the solid angle of the sensor seen from the point, with the
cosine to the sensor's inward normal (zero for light from behind), softened so that a point touching
a sensor gives it at most half its light (the hemisphere limit). The toy simulation
(lib.sim.physics.SensorResponse) and the solid-angle inpainting baseline
(lib.evaluation.inpainting_baselines) both compute it here, with one function.
"""
from __future__ import annotations

import numpy as np

from lib.geometry.sensors import IS_SIPM

SIPM_AREA_CM2 = 1.4
"""Photosensitive area (cm^2) of an inner-face SiPM module (MEG II: four 5.95 x 5.95 mm^2 MPPC chips)."""
PMT_AREA_CM2 = 16.0
"""Photocathode area (cm^2) of a 2-inch PMT of the other faces (45 mm diameter window)."""


def sensor_areas(sipm_area_cm2: float = SIPM_AREA_CM2, pmt_area_cm2: float = PMT_AREA_CM2) -> np.ndarray:
    """(4760,) area (cm^2) of every sensor: SiPMs on the inner face, PMTs elsewhere."""
    return np.where(IS_SIPM, sipm_area_cm2, pmt_area_cm2)


class LightCollection:
    """Collected light fraction of every sensor for points, in float32 (the simulator's precision).

    `positions` / `normals` (S, 3): sensor places (cm) and unit inward normals; `area` (S,) cm^2 and
    `efficiency` (S,) (scalars broadcast). Computed as matrix products over (point, sensor) pairs.
    """

    def __init__(self, positions: np.ndarray, normals: np.ndarray, area, efficiency=1.0) -> None:
        positions = np.asarray(positions).astype(np.float32)
        normals = np.asarray(normals).astype(np.float32)
        area = np.broadcast_to(np.asarray(area, dtype=np.float64), len(positions))
        efficiency = np.broadcast_to(np.asarray(efficiency, dtype=np.float64), len(positions))
        self.positions_t = np.ascontiguousarray(positions.T)  # (3, S)
        self.normals_t = np.ascontiguousarray(normals.T)
        self.position_sq = np.einsum("si,si->s", positions, positions)
        self.normal_dot_position = np.einsum("si,si->s", normals, positions)
        self.collection = (efficiency * area / (4 * np.pi)).astype(np.float32)
        self.softening = (area / (2 * np.pi)).astype(np.float32)

    def fraction(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(fraction, distance), each (M, S) float32, for points (M, 3) cm: the collected fraction of each
        point's light per sensor and the point-sensor distance (cm)."""
        points = np.asarray(points, dtype=np.float32).reshape(-1, 3)
        # |p - s|^2 and n_s . (p - s) as matrix products over the (point, sensor) pairs
        dist_sq = points @ self.positions_t
        dist_sq *= -2.0
        dist_sq += np.einsum("mi,mi->m", points, points)[:, None]
        dist_sq += self.position_sq
        np.maximum(dist_sq, 1e-6, out=dist_sq)
        facing = points @ self.normals_t
        facing -= self.normal_dot_position
        np.maximum(facing, 0.0, out=facing)
        dist = np.sqrt(dist_sq)
        # fraction = collection * cos / (d^2 + softening), cos = facing / d
        dist_sq += self.softening
        dist_sq *= dist
        facing *= self.collection
        facing /= dist_sq
        return facing, dist
