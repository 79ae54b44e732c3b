"""MAE decoders at sensor resolution: one prediction per sensor, the dense patch owns its coarse PMTs."""
from __future__ import annotations

import numpy as np
import torch

from lib.geometry import FACE_OUTER, GRID_SHAPES, N_SENSORS, face_ids, grid_ids
from lib.config.model_schema import ModelConfig
from lib.models.decoders import FaceDecoder, MAEDecoder, face_sensor_ids, sensor_sources
from lib.models.encoder import XECEncoder

SHARED_COARSE_IDS = [4185, 4186, 4187, 4194, 4195, 4196, 4203, 4204, 4205, 4212, 4213, 4214]
"""The coarse outer PMTs that lie inside the dense patch (both outer grids show them)."""


def _decoder() -> MAEDecoder:
    cfg = ModelConfig(preset="tiny")
    return MAEDecoder(XECEncoder(cfg).token_names, cfg, out_channels=2)


def test_the_two_outer_grids_share_exactly_the_twelve_coarse_pmts_of_the_patch():
    shared = np.intersect1d(grid_ids("outer_coarse"), grid_ids("outer_dense"))
    assert shared.tolist() == SHARED_COARSE_IDS
    outer = np.union1d(grid_ids("outer_coarse"), grid_ids("outer_dense"))
    assert np.array_equal(outer, face_ids(FACE_OUTER))


def test_every_sensor_takes_exactly_one_cell_and_shared_pmts_take_the_dense_patch():
    token_names = XECEncoder(ModelConfig(preset="tiny")).token_names
    sources = sensor_sources(token_names)
    cell_ids = np.concatenate([face_sensor_ids(name) for name in token_names])
    assert len(cell_ids) == N_SENSORS + len(SHARED_COARSE_IDS)
    assert len(np.unique(sources)) == N_SENSORS  # no cell feeds two sensors
    assert np.array_equal(cell_ids[sources], np.arange(N_SENSORS))  # each sensor reads a cell showing itself
    dense = token_names.index("outer_dense")
    dense_start = sum(len(face_sensor_ids(name)) for name in token_names[:dense])
    dense_cells = range(dense_start, dense_start + len(face_sensor_ids("outer_dense")))
    assert all(sources[sensor] in dense_cells for sensor in SHARED_COARSE_IDS)


def test_coarse_cells_inside_the_patch_get_no_gradient_and_all_other_cells_do():
    torch.manual_seed(0)
    decoder = _decoder()
    face_outputs = {}

    def keep(name):
        def hook(module, args, output):
            output.retain_grad()
            face_outputs[name] = output
        return hook

    for name in ("outer_coarse", "outer_dense"):
        decoder.decoders[name].register_forward_hook(keep(name))
    tokens = torch.randn(2, 7, decoder.decoders["inner"].seed.in_features)
    decoder(tokens).sum().backward()
    coarse_grad = face_outputs["outer_coarse"].grad.abs().sum(dim=(0, 1))  # (24, 9)
    inside = np.isin(grid_ids("outer_coarse"), SHARED_COARSE_IDS)
    assert coarse_grad.shape == GRID_SHAPES["outer_coarse"]
    assert torch.all(coarse_grad[torch.from_numpy(inside)] == 0)
    assert torch.all(coarse_grad[torch.from_numpy(~inside)] > 0)
    assert torch.all(face_outputs["outer_dense"].grad.abs().sum(dim=(0, 1)) > 0)


def test_face_decoder_predicts_the_face_grid_cropped_from_its_upsampled_seed():
    decoder = FaceDecoder(encoder_dim=32, decoder_dim=8, out_shape=(93, 44), out_channels=2, upsample_steps=3)
    assert decoder.seed_shape == (12, 6)
    assert decoder(torch.randn(3, 32)).shape == (3, 2, 93, 44)
