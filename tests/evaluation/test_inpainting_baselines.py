"""The model-free inpainting baselines against hand-computed cases, the inpainter adapter, bad positions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib import geometry as geo
from lib.data.files import DataError
from lib.evaluation.inpainting_baselines import (
    InpainterFiller, NeighbourFiller, SolidAngleFiller, build_baseline, position_branch_for,
)
from lib.evaluation.inpainting_preprocess import fill_sensors
from lib.geometry.light import sensor_areas
from lib.normalization import NormalizationConfig, normalize
from tests.evaluation.inpainting_helpers import RecordingInpainter, make_batch, sensor_mask
from tests.geometry.test_light import hand_fraction

INNER = geo.grid_ids("inner")
TIME = 2.0**-25  # s (about 30 ns): dyadic, so that any mean of equal values is exact


def uniform_batch(events: int = 2, npho: float = 500.0) -> dict[str, torch.Tensor]:
    return make_batch(np.full((events, geo.N_SENSORS), npho), np.full((events, geo.N_SENSORS), TIME),
                      xyzTruth=np.tile([-70.0, 0.0, 0.0], (events, 1)))


def test_a_uniform_field_is_reproduced_exactly_on_every_face():
    block = INNER[20:23, 10:13].ravel()  # the centre's own neighbours are masked too: the next ring fills it
    mask = sensor_mask(*block, 4749, 4185, geo.grid_ids("outer_coarse")[0, 0], 4310, 4460, 4600, 4700, events=2)
    filled = NeighbourFiller().fill(uniform_batch(), mask)
    assert (filled["npho"][mask.numpy()] == 500.0).all()
    assert np.isnan(filled["npho"][~mask.numpy()]).all()  # nothing but the mask is filled
    for filler in (NeighbourFiller(), SolidAngleFiller("xyzTruth")):  # time: the neighbour mean in both
        assert (filler.fill(uniform_batch(), mask)["time"][mask.numpy()] == TIME).all(), filler.name


def test_invalid_and_masked_neighbours_are_not_used():
    npho = np.zeros((1, geo.N_SENSORS))
    corner = INNER[0, 0]  # neighbours INNER[0, 1], INNER[1, 0], INNER[1, 1]
    npho[0, [INNER[0, 1], INNER[1, 0], INNER[1, 1]]] = [1e10, 300.0, 50.0]  # 1e10: a dead (fill-value) sensor
    npho[0, corner] = 7.0
    time = np.zeros_like(npho)
    time[0, [INNER[1, 0], INNER[1, 1]]] = [4 * TIME, 2 * TIME]
    filled = NeighbourFiller().fill(make_batch(npho, time), sensor_mask(corner))
    assert filled["npho"][0, corner] == 175.0
    assert filled["time"][0, corner] == 4 * TIME  # the 50-pe sensor is below the time threshold (100 pe)
    masked_too = NeighbourFiller().fill(make_batch(npho, time), sensor_mask(corner, INNER[1, 0]))
    assert masked_too["npho"][0, corner] == 50.0


def test_solid_angle_of_a_hand_computed_case():
    corner, neighbours = INNER[0, 0], [INNER[0, 1], INNER[1, 0], INNER[1, 1]]
    point = geo.POSITIONS[INNER[3, 2]] + 6.0 * geo.NORMALS[INNER[3, 2]]
    npho = np.zeros((1, geo.N_SENSORS))
    npho[0, neighbours] = [100.0, 200.0, 300.0]
    filled = SolidAngleFiller("xyzTruth").fill(make_batch(npho, xyzTruth=point[None]), sensor_mask(corner))
    omega = {s: hand_fraction(point, s, sensor_areas()[s]) for s in [corner, *neighbours]}
    expected = omega[corner] * 600.0 / sum(omega[s] for s in neighbours)
    assert filled["npho"][0, corner] == pytest.approx(expected, rel=1e-5)


POINT = np.array([-71.0, 8.0, -4.0])  # inside the xenon, 6 cm behind the inner face, seen by every face


@pytest.mark.parametrize("sensor", [INNER[40, 20], INNER[41, 43], 4749, geo.grid_ids("us")[5, 3],
                                    geo.grid_ids("ds")[5, 3], 4620, 4700])
def test_a_point_source_gives_the_exact_npho_ratio(sensor):
    point = POINT
    omega = np.array([hand_fraction(point, s, sensor_areas()[s]) for s in range(geo.N_SENSORS)])
    npho = 1e6 * omega[None]
    batch = make_batch(npho, xyzTruth=point[None])
    filled = SolidAngleFiller("xyzTruth").fill(batch, sensor_mask(sensor))["npho"][0, sensor]
    assert filled == pytest.approx(npho[0, sensor], rel=1e-4)
    plain = NeighbourFiller().fill(batch, sensor_mask(sensor))["npho"][0, sensor]
    assert abs(plain / npho[0, sensor] - 1) > 1e-3  # the plain mean does not know the light's fall-off


def test_solid_angle_falls_back_to_the_neighbour_mean_without_a_usable_point():
    centre = INNER[41, 19]  # the inner sensor nearest POINT
    npho = np.zeros((2, geo.N_SENSORS))
    npho[:, INNER[40:43, 18:21].ravel()] = 300.0
    npho[:, INNER[40, 18]] = 1200.0  # the mean of the 8 neighbours: 3300 / 8
    points = np.stack([POINT, [1e10, 1e10, 1e10]])
    filled = SolidAngleFiller("xyzTruth").fill(make_batch(npho, xyzTruth=points), sensor_mask(centre, events=2))
    assert filled["npho"][1, centre] == 412.5
    assert filled["npho"][0, centre] not in (412.5, 300.0)


def test_position_branch_missing_or_all_fill_values_is_refused_in_one_line():
    batch = uniform_batch()
    with pytest.raises(DataError, match="xyzRecoFI.*lacks") as missing:
        SolidAngleFiller("xyzRecoFI").fill(batch, sensor_mask(5, events=2))
    fill_values = {**batch, "xyzTruth": torch.full((2, 3), 1e10)}
    with pytest.raises(DataError, match="only NaN or fill values") as filled:
        SolidAngleFiller("xyzTruth").fill(fill_values, sensor_mask(5, events=2))
    with pytest.raises(DataError, match="xyzTruth or xyzRecoFI") as none:
        build_baseline("solid_angle", ["npho", "relative_time", "energyTruth"])
    with pytest.raises(DataError, match="'xyzReco'"):
        position_branch_for(["xyzTruth"], "xyzReco")
    assert all("\n" not in str(err.value) for err in (missing, filled, none))
    assert position_branch_for(["xyzRecoFI", "energyReco"]) == "xyzRecoFI"
    assert position_branch_for(["xyzRecoFI", "xyzTruth"]) == "xyzTruth"


def test_inpainter_adapter_keeps_the_masked_values_and_leaves_out_what_it_does_not_predict():
    stand_in = RecordingInpainter(value=42.0, channels=("npho",))
    mask = sensor_mask(3, 4000, events=2)
    filled = InpainterFiller(stand_in).fill(uniform_batch(), mask)
    assert (filled["npho"][mask.numpy()] == 42.0).all() and np.isnan(filled["npho"][~mask.numpy()]).all()
    assert np.isnan(filled["time"]).all()
    assert torch.equal(stand_in.calls[0][1], mask)


def test_inpainter_adapter_normalizes_with_the_inpainters_own_settings():
    stand_in = RecordingInpainter()
    own = NormalizationConfig(npho_scheme="sqrt")
    batch = uniform_batch()
    InpainterFiller(stand_in, own).fill(batch, sensor_mask(3, events=2))
    seen = stand_in.calls[0][0]
    expected, _, _ = normalize(batch["npho_raw"].numpy(), batch["time_raw"].numpy(), own)
    np.testing.assert_array_equal(seen["x"].numpy(), expected)


def test_inpainter_adapter_refuses_a_wrong_shape():
    class Wrong:
        def fill(self, batch, mask):
            return {"npho": torch.zeros(3)}

    with pytest.raises(ValueError, match="shape"):
        InpainterFiller(Wrong()).fill(uniform_batch(), sensor_mask(3, events=2))


def test_fillers_never_see_the_values_they_fill():
    stand_in = RecordingInpainter()
    batch, mask = uniform_batch(), sensor_mask(3, 4000, events=2)
    fill_sensors(InpainterFiller(stand_in), batch, mask.numpy(), NormalizationConfig())
    seen = stand_in.calls[0][0]
    assert (seen["npho_raw"][mask] == 1e10).all() and not seen["npho_valid"][mask].any()
    assert torch.equal(seen["npho_raw"][~mask], batch["npho_raw"][~mask])
