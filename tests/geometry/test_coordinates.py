"""MEG coordinate conventions (lib.geometry.coordinates) against hand-computed points and MEG's own formulas.

MEG II offline xectools.h: XYZ2Phi = 180 deg + atan2(-y, -x); XYZ2V = -(phi - 180 deg) * (XERIN + MPPC height);
XYZ2W = r - (XERIN + MPPC height); UVW2XYZ: x = -(w + R) cos(v / R), y = (w + R) sin(v / R), z = u; with
XERIN = 64.84 cm and MPPC height 0.13 cm, R = 64.97 cm. emiAng (research code others/MCXECPreprocess.C,
macro/PrepareRealData.C): theta = TVector3::Theta, phi = ATan2(y, -x), in degrees.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.geometry.coordinates import (
    angles_to_unit_vectors,
    unit_vectors_to_angles,
    uvw_from_xyz,
    xyz_from_uvw,
)
from lib.geometry.sensors import INNER_RADIUS

R_IN = 64.84 + 0.13

# (x, y, z) -> (u, v, w), computed by hand:
#   (-70, 10, 5): r = sqrt(4900 + 100) = 70.7107; phi = 180 - atan(10/70) = 180 - 8.1301 deg;
#                 v = -(phi - 180) deg * R = 0.1418971 rad * 64.97 = 9.2191; w = 70.7107 - 64.97 = 5.7407
#   (-70, -10, -5): the mirror image in y and z: u = -5, v = -9.2191, w = 5.7407
#   (-64.97, 0, 0): on the inner face at phi = 180 deg: (0, 0, 0)
#   (0, 80, 1): phi = 90 deg, v = (pi / 2) * 64.97 = 102.0546, w = 80 - 64.97 = 15.03
HAND_POINTS = [
    ((-70.0, 10.0, 5.0), (5.0, 9.2191, 5.7407)),
    ((-70.0, -10.0, -5.0), (-5.0, -9.2191, 5.7407)),
    ((-64.97, 0.0, 0.0), (0.0, 0.0, 0.0)),
    ((0.0, 80.0, 1.0), (1.0, 102.0546, 15.03)),
]
# emission direction -> (theta, phi) in degrees, by hand: phi = atan2(y, -x) is 0 towards the detector centre (-x)
HAND_ANGLES = [
    ((-1.0, 0.0, 0.0), (90.0, 0.0)),
    ((-1.0, 1.0, 0.0), (90.0, 45.0)),
    ((-1.0, -1.0, np.sqrt(2.0)), (45.0, -45.0)),
    ((0.0, 1.0, -1.0), (135.0, 90.0)),
    ((1.0, 0.0, 0.0), (90.0, 180.0)),  # exactly away from the detector: +180, never -180
    ((1.0, -1e-9, 0.0), (90.0, -180.0 + np.degrees(1e-9))),
    ((0.0, 0.0, 2.0), (0.0, 180.0)),  # along +z phi is undefined; any value in range
]


def random_points(n: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r, phi, z = rng.uniform(1.0, 120.0, n), np.radians(rng.uniform(1.0, 359.0, n)), rng.uniform(-50, 50, n)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def test_inner_radius_is_megs_spacer_plus_mppc_height():
    assert INNER_RADIUS == pytest.approx(R_IN, abs=1e-12)


@pytest.mark.parametrize("xyz,uvw", HAND_POINTS)
def test_uvw_of_hand_computed_points(xyz, uvw):
    np.testing.assert_allclose(uvw_from_xyz(np.array(xyz)), uvw, atol=1e-4)
    np.testing.assert_allclose(xyz_from_uvw(np.array(uvw)), xyz, atol=2e-4)


def test_uvw_follows_megs_formulas_everywhere():
    xyz = random_points()
    x, y, z = xyz.T
    phi_meg = np.pi + np.arctan2(-y, -x)  # XYZ2Phi, in (0, 2 pi]
    expected = np.stack([z, -(phi_meg - np.pi) * R_IN, np.hypot(x, y) - R_IN], axis=1)
    np.testing.assert_allclose(uvw_from_xyz(xyz), expected, atol=1e-9)
    u, v, w = expected.T  # UVW2XYZ
    np.testing.assert_allclose(xyz_from_uvw(expected), np.stack([-(w + R_IN) * np.cos(v / R_IN),
                                                                 (w + R_IN) * np.sin(v / R_IN), u], axis=1))


def test_uvw_round_trips_and_works_on_torch():
    xyz = random_points(seed=1)
    np.testing.assert_allclose(xyz_from_uvw(uvw_from_xyz(xyz)), xyz, atol=1e-9)
    uvw = uvw_from_xyz(xyz)
    np.testing.assert_allclose(uvw_from_xyz(xyz_from_uvw(uvw)), uvw, atol=1e-9)
    as_torch = uvw_from_xyz(torch.from_numpy(xyz))
    assert isinstance(as_torch, torch.Tensor)
    np.testing.assert_allclose(as_torch.numpy(), uvw, atol=1e-9)
    np.testing.assert_allclose(xyz_from_uvw(torch.from_numpy(uvw)).numpy(), xyz, atol=1e-9)


@pytest.mark.parametrize("vector,angles", HAND_ANGLES)
def test_emission_angles_of_hand_computed_directions(vector, angles):
    theta, phi = unit_vectors_to_angles(np.array(vector))
    assert theta == pytest.approx(angles[0], abs=1e-9) and phi == pytest.approx(angles[1], abs=1e-9)
    assert -180.0 < phi <= 180.0
    np.testing.assert_allclose(angles_to_unit_vectors(theta, phi), np.array(vector) / np.linalg.norm(vector),
                               atol=1e-9)


def test_emission_angles_follow_the_research_macros_and_round_trip():
    vectors = random_points(seed=2)  # any length: normalized inside
    theta, phi = unit_vectors_to_angles(vectors)
    x, y, z = vectors.T
    np.testing.assert_allclose(theta, np.degrees(np.arctan2(np.hypot(x, y), z)), atol=1e-9)  # TVector3::Theta
    np.testing.assert_allclose(phi, np.degrees(np.arctan2(y, -x)), atol=1e-9)
    assert ((theta >= 0) & (theta <= 180)).all() and ((phi > -180) & (phi <= 180)).all()
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    np.testing.assert_allclose(angles_to_unit_vectors(theta, phi), unit, atol=1e-9)
    # towards the detector (x < 0) phi stays well inside (-90, 90): no wrap at +-180 there
    assert (np.abs(phi[x < 0]) < 90).all()


def test_emission_angles_on_torch_match_numpy():
    vectors = random_points(seed=3)
    theta, phi = unit_vectors_to_angles(torch.from_numpy(vectors))
    assert isinstance(theta, torch.Tensor) and isinstance(phi, torch.Tensor)
    expected = unit_vectors_to_angles(vectors)
    np.testing.assert_allclose(theta.numpy(), expected[0], atol=1e-9)
    np.testing.assert_allclose(phi.numpy(), expected[1], atol=1e-9)
    back = angles_to_unit_vectors(theta, phi)
    np.testing.assert_allclose(back.numpy(), angles_to_unit_vectors(*expected), atol=1e-12)
