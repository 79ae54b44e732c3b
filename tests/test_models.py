"""XECEncoder / XECMAE (tiny preset): shapes, sparse-conv masking, hex locality, gradients, stage groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.geometry import HEX_NEIGHBORS, N_HEX, N_SENSORS, POSITIONS, hex_ids
from lib.models.blocks import DropPath, HexDepthwiseConv
from lib.models.config import ModelConfig
from lib.models.encoder import XECEncoder
from lib.models.mae import XECMAE
from lib.normalization import NormalizationConfig

HEX_NEIGHBOUR_DISTANCE_CM = 8.0


def _batch(batch: int = 2, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, N_SENSORS, 2, generator=gen)
    npho_valid = torch.rand(batch, N_SENSORS, generator=gen) > 0.05
    time_valid = npho_valid & (torch.rand(batch, N_SENSORS, generator=gen) > 0.2)
    return x, npho_valid, time_valid


def _tiny(**fields) -> ModelConfig:
    return ModelConfig(preset="tiny", **fields)


@pytest.mark.parametrize("outer_mode, n_faces", [("fine", 6), ("split", 7)])
@pytest.mark.parametrize("channels", [["npho", "time"], ["npho"]])
def test_output_shapes(outer_mode, n_faces, channels):
    torch.manual_seed(0)
    cfg = _tiny(outer_mode=outer_mode, predict_channels=channels)
    model = XECMAE(cfg, NormalizationConfig())
    x, npho_valid, time_valid = _batch(batch=3)
    tokens = model.encoder(x)
    assert model.encoder.n_tokens == n_faces
    assert tokens.shape == (3, n_faces, cfg.encoder_dim)
    out = model(x, npho_valid, time_valid, mask_ratio=0.6)
    assert out["pred"].shape == (3, N_SENSORS, len(channels))
    assert out["mask"].shape == (3, N_SENSORS) and out["mask"].dtype == torch.bool
    assert model.predict_channels == channels
    # the prediction buffer starts at zero: every sensor must have been written by some face decoder
    assert (out["pred"] != 0).all()


def test_tiny_preset_fills_unset_fields_and_explicit_fields_win():
    base, tiny = ModelConfig(), _tiny(encoder_dim=96)
    assert tiny.encoder_dim == 96
    assert tiny.face_widths != base.face_widths and tiny.fusion_depth <= base.fusion_depth
    assert ModelConfig(preset="tiny").encoder_dim < base.encoder_dim


@pytest.mark.parametrize(
    "fields, key",
    [
        ({"encoder_dim": 100}, "encoder_dim"),
        ({"face_depths": [1, 1, 1]}, "face_depths"),
        ({"outer_fine_pool": (5, 5)}, "outer_fine_pool"),
        ({"predict_channels": ["time"]}, "predict_channels"),
        ({"fusion_heads": 3}, "fusion_heads"),
        ({"encoder_dmi": 64}, "encoder_dmi"),
    ],
)
def test_bad_config_rejected(fields, key):
    with pytest.raises(ValueError, match=key):
        _tiny(**fields)


@pytest.mark.parametrize("fields", [{"outer_mode": "fine"}, {"outer_mode": "fine", "outer_fine_pool": (3, 5)},
                                    {"outer_mode": "split"}])
def test_masked_input_values_do_not_reach_the_encoder_output(fields):
    torch.manual_seed(0)
    encoder = XECEncoder(_tiny(**fields)).eval()
    x, _, _ = _batch()
    mask = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(1)) < 0.6
    changed_masked = torch.where(mask.unsqueeze(-1), 100 * torch.randn_like(x), x)
    changed_visible = x.clone()
    visible_sensor = int(torch.nonzero(~mask[0])[0])
    changed_visible[0, visible_sensor] += 5.0
    with torch.no_grad():
        reference = encoder(x, mask)
        assert torch.allclose(encoder(changed_masked, mask), reference, atol=1e-5)
        assert not torch.allclose(encoder(changed_visible, mask)[0], reference[0], atol=1e-5)


def test_hex_graph_conv_only_reaches_neighbours():
    torch.manual_seed(0)
    conv = HexDepthwiseConv(4, HEX_NEIGHBORS)
    positions = POSITIONS[hex_ids("top")]
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    x = torch.randn(1, N_HEX, 4)
    for node in (0, 17, 40, N_HEX - 1):
        changed = x.clone()
        changed[0, node] += 1.0
        affected = (conv(changed) - conv(x)).abs().amax(dim=-1)[0] > 1e-6
        expected = distances[node] <= HEX_NEIGHBOUR_DISTANCE_CM  # itself and its neighbours, from positions
        assert np.array_equal(affected.numpy(), expected)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    model = XECMAE(_tiny(), NormalizationConfig())
    x, npho_valid, time_valid = _batch()
    out = model(x, npho_valid, time_valid, mask_ratio=0.6, generator=torch.Generator().manual_seed(0))
    (out["pred"] - x).square().mean().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


def test_drop_path_is_identity_in_eval_and_drops_samples_in_training():
    x = torch.randn(64, 3, 5)
    drop = DropPath(0.5)
    assert torch.equal(drop.eval()(x), x)
    dropped = drop.train()(x)
    kept = dropped.flatten(1).abs().sum(1) > 0
    assert 0 < kept.sum() < 64
    assert torch.allclose(dropped[kept], 2 * x[kept])
    torch.manual_seed(0)
    encoder = XECEncoder(_tiny(drop_path=0.5)).eval()
    x, _, _ = _batch()
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x))


def test_stage_groups_cover_all_encoder_parameters_once_in_order():
    encoder = XECEncoder(_tiny(outer_mode="split"))
    groups = encoder.stage_groups()
    group_ids = [{id(p) for p in group.parameters()} for group in groups]
    all_ids = {id(p) for p in encoder.parameters()}
    assert sum(len(ids) for ids in group_ids) == len(all_ids)
    assert set().union(*group_ids) == all_ids
    stem_ids = {id(p) for backbone in encoder.grid_backbones.values() for p in backbone.stem.parameters()}
    assert stem_ids <= group_ids[0]
    assert {id(p) for p in encoder.norm.parameters()} <= group_ids[-1]
    assert len(groups) == 1 + len(encoder.cfg.face_widths) + 1 + encoder.cfg.fusion_depth
