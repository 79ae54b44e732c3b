"""Coordinate conventions: cylindrical angles, inner-face coordinates (u, v, w) and emission angles.

The one place that says what u, v, w and the emission angles mean; the simulator, the
classical baseline, the regression tasks and the plots use these functions. Works on numpy
arrays, and the angle conversions also on torch tensors (the output follows the input).
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np

from lib.geometry.sensors import INNER_RADIUS


def _xp(array: Any):
    """numpy or torch, following `array` (torch only when it is already imported)."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and isinstance(array, torch.Tensor) else np


def azimuth(xyz: np.ndarray) -> np.ndarray:
    """phi = atan2(y, x) in [0, 2 pi) of points (..., 3), radians."""
    return np.mod(np.arctan2(xyz[..., 1], xyz[..., 0]), 2 * np.pi)


def radius(xyz: np.ndarray) -> np.ndarray:
    """Distance sqrt(x^2 + y^2) of points (..., 3) from the z axis."""
    return np.hypot(xyz[..., 0], xyz[..., 1])


def uvw_from_xyz(xyz: np.ndarray) -> np.ndarray:
    """Inner-face coordinates (u, v, w) in cm of points xyz (..., 3).

    u = z; v = INNER_RADIUS * (phi - pi) with phi = atan2(y, x) in [0, 2 pi), i.e. the
    arc length on the inner face measured from phi = 180 deg (the -x axis), increasing with
    phi (v > 0 for y < 0); w = sqrt(x^2 + y^2) - INNER_RADIUS, the radial depth behind the face.
    """
    return np.stack([xyz[..., 2], INNER_RADIUS * (azimuth(xyz) - np.pi), radius(xyz) - INNER_RADIUS], axis=-1)


def angles_to_unit_vectors(theta_deg, phi_deg):
    """Emission angles (theta from +z, phi = atan2(y, x), degrees) -> unit vectors (..., 3)."""
    xp = _xp(theta_deg)
    theta, phi = xp.deg2rad(theta_deg), xp.deg2rad(phi_deg)
    return xp.stack([xp.sin(theta) * xp.cos(phi), xp.sin(theta) * xp.sin(phi), xp.cos(theta)], -1)


def unit_vectors_to_angles(vectors):
    """Vectors (..., 3) (normalized here) -> (theta, phi) in degrees, phi in [0, 360)."""
    xp = _xp(vectors)
    norm = (vectors**2).sum(-1) ** 0.5
    unit = vectors / xp.clip(norm, 1e-12, None)[..., None]
    theta = xp.rad2deg(xp.arccos(xp.clip(unit[..., 2], -1.0, 1.0)))
    phi = xp.rad2deg(xp.arctan2(unit[..., 1], unit[..., 0])) % 360.0
    return theta, phi
