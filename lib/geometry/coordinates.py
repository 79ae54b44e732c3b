"""MEG coordinate conventions: inner-face coordinates (u, v, w) and emission angles.

The one place that says what u, v, w and the emission angles mean; the simulator, the
classical baseline, the regression tasks and the plots use these functions. They follow the
experiment's software (MEG II offline `xectools.h`: XYZ2U/V/W, UVW2XYZ; the research code's
`others/MCXECPreprocess.C` and `macro/PrepareRealData.C` for emiAng), see docs/conventions.md:

    u = z
    v = -(phi - pi) * R_in,  phi = atan2(y, x) in [0, 2 pi)   (equivalently v = R_in * atan2(y, -x))
    w = sqrt(x^2 + y^2) - R_in,  R_in = INNER_RADIUS = 64.97 cm
    emiAng = (theta, phi_e) in degrees of the emission direction e:
        theta = polar angle from +z in [0, 180], phi_e = atan2(e_y, -e_x) in (-180, 180]

so v > 0 and phi_e > 0 on the +y side of the detector (which sits around the -x axis).
Every function works on numpy arrays and on torch tensors (the output follows the input).
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


def azimuth(xyz):
    """phi = atan2(y, x) in [0, 2 pi) of points (..., 3), radians."""
    xp = _xp(xyz)
    return xp.arctan2(xyz[..., 1], xyz[..., 0]) % (2 * np.pi)


def radius(xyz):
    """Distance sqrt(x^2 + y^2) of points (..., 3) from the z axis."""
    return _xp(xyz).hypot(xyz[..., 0], xyz[..., 1])


def uvw_from_xyz(xyz):
    """Inner-face coordinates (u, v, w) in cm of points xyz (..., 3) in cm (MEG convention, module docstring)."""
    xp = _xp(xyz)
    v = INNER_RADIUS * xp.arctan2(xyz[..., 1], -xyz[..., 0])
    return xp.stack([xyz[..., 2], v, radius(xyz) - INNER_RADIUS], -1)


def xyz_from_uvw(uvw):
    """Points xyz (..., 3) in cm of inner-face coordinates (u, v, w) in cm; the inverse of uvw_from_xyz."""
    xp = _xp(uvw)
    r, angle = uvw[..., 2] + INNER_RADIUS, uvw[..., 1] / INNER_RADIUS
    return xp.stack([-r * xp.cos(angle), r * xp.sin(angle), uvw[..., 0]], -1)


def angles_to_unit_vectors(theta_deg, phi_deg):
    """Emission angles in degrees (theta from +z, phi = atan2(y, -x)) -> unit vectors (..., 3)."""
    xp = _xp(theta_deg)
    theta, phi = xp.deg2rad(theta_deg), xp.deg2rad(phi_deg)
    return xp.stack([-xp.sin(theta) * xp.cos(phi), xp.sin(theta) * xp.sin(phi), xp.cos(theta)], -1)


def unit_vectors_to_angles(vectors):
    """Vectors (..., 3) of any length -> (theta, phi) in degrees, theta in [0, 180], phi = atan2(y, -x) in (-180, 180]."""
    xp = _xp(vectors)
    theta = xp.rad2deg(xp.arctan2(radius(vectors), vectors[..., 2]))
    phi = xp.rad2deg(xp.arctan2(vectors[..., 1], -vectors[..., 0]))
    return theta, xp.where(phi <= -180.0, phi + 360.0, phi)
