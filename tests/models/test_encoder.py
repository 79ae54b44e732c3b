"""XECEncoder / XECMAE (tiny preset): shapes, sparse-conv masking, hex locality, gradients, stage groups."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.geometry import HEX_NEIGHBORS, N_HEX, N_SENSORS, POSITIONS, grid_ids, hex_ids
from lib.models.blocks import DropPath, HexDepthwiseConv
from lib.config.model_schema import ModelConfig
from lib.models.encoder import LightPool, XECEncoder
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


@pytest.mark.parametrize("channels", [["npho", "time"], ["npho"]])
def test_output_shapes(channels):
    torch.manual_seed(0)
    n_faces = 7  # inner, outer coarse, outer dense patch, US, DS, top, bottom
    cfg = _tiny(predict_channels=channels)
    model = XECMAE(cfg, NormalizationConfig())
    x, npho_valid, time_valid = _batch(batch=3)
    tokens = model.encoder(x)
    assert model.encoder.n_tokens == n_faces
    assert tokens.shape == (3, n_faces, cfg.encoder_dim)
    out = model(x, npho_valid, time_valid, mask_ratio=0.6)
    assert out["pred"].shape == (3, N_SENSORS, len(channels))
    assert out["mask"].shape == (3, N_SENSORS) and out["mask"].dtype == torch.bool
    assert model.predict_channels == channels


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
        ({"predict_channels": ["time"]}, "predict_channels"),
        ({"fusion_heads": 3}, "fusion_heads"),
        ({"encoder_dmi": 64}, "encoder_dmi"),
        ({"stem_stride": 0}, "stem_stride"),
        ({"light_pool_heads": -1}, "light_pool_heads"),
    ],
)
def test_bad_config_rejected(fields, key):
    with pytest.raises(ValueError, match=key):
        _tiny(**fields)


@pytest.mark.parametrize("fields", [{}, {"stem_stride": 1}, {"stem_stride": 3}])
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
    encoder = XECEncoder(_tiny())
    groups = encoder.stage_groups()
    group_ids = [{id(p) for p in group.parameters()} for group in groups]
    all_ids = {id(p) for p in encoder.parameters()}
    assert sum(len(ids) for ids in group_ids) == len(all_ids)
    assert set().union(*group_ids) == all_ids
    stem_ids = {id(p) for backbone in encoder.grid_backbones.values() for p in backbone.stem.parameters()}
    assert stem_ids <= group_ids[0]
    assert {id(p) for p in encoder.norm.parameters()} <= group_ids[-1]
    assert len(groups) == 1 + len(encoder.cfg.face_widths) + 1 + encoder.cfg.fusion_depth


def _expected_coordinates() -> np.ndarray:
    """(4760, 3) standardized (z, phi, rho) computed here from POSITIONS, phi in degrees (scale-free)."""
    x, y, z = POSITIONS.T
    phi = np.degrees(np.arctan2(y, x)) % 360.0
    coords = np.stack([z, phi, np.sqrt(x**2 + y**2)], axis=1)
    return (coords - coords.mean(0)) / coords.std(0)


def _backbone_inputs(encoder: XECEncoder, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """What each face backbone's light pool receives: name -> (B, P, C_in)."""
    seen = {}
    backbones = {**encoder.grid_backbones, **encoder.hex_backbones}
    hooks = [backbone.light_pool.register_forward_hook(
        lambda module, args, out, name=name: seen.__setitem__(name, args[0])) for name, backbone in backbones.items()]
    with torch.no_grad():
        encoder(x)
    for hook in hooks:
        hook.remove()
    return seen


def test_coordinate_channels_hold_each_sensors_standardized_position():
    encoder = XECEncoder(_tiny())
    x, _, _ = _batch()
    inputs = _backbone_inputs(encoder, x)
    expected = _expected_coordinates()
    for name in encoder.grid_backbones:
        ids = torch.from_numpy(grid_ids(name).ravel().copy())
        assert np.allclose(inputs[name][0, :, 2:].numpy(), expected[ids.numpy()], atol=1e-5), name
        assert torch.equal(inputs[name][:, :, :2], x[:, ids]), name
    for face in encoder.hex_backbones:
        assert np.allclose(inputs[face][1, :, 2:].numpy(), expected[hex_ids(face)], atol=1e-5), face
        assert torch.equal(inputs[face][:, :, :2], x[:, torch.from_numpy(hex_ids(face).copy())]), face


def test_coordinate_channels_can_be_switched_off():
    encoder = XECEncoder(_tiny(coord_channels=False))
    inputs = _backbone_inputs(encoder, _batch()[0])
    assert all(value.shape[-1] == 2 for value in inputs.values())


def test_light_pool_is_a_softmax_weighted_mean_and_log_mean_exp_of_its_scores():
    torch.manual_seed(0)
    heads, n_positions = 3, 10
    pool = LightPool(in_channels=4, heads=heads)
    inputs = torch.randn(2, n_positions, 4)
    visible = (torch.rand(2, n_positions, 1) > 0.3).float()
    visible[:, 0] = 1.0
    out = pool(inputs, visible).detach().numpy().astype(np.float64)
    weight, bias = pool.score.weight.detach().numpy(), pool.score.bias.detach().numpy()
    values, keep = inputs.numpy().astype(np.float64), visible[..., 0].numpy() > 0
    for b in range(2):
        kept = values[b][keep[b]]
        scores = kept @ weight.T + bias  # (P_visible, heads)
        softmax = np.exp(scores - scores.max(0)) / np.exp(scores - scores.max(0)).sum(0)
        pooled = softmax.T @ kept  # (heads, C)
        log_mean_exp = np.log(np.exp(scores).mean(0))
        assert np.allclose(out[b], np.concatenate([pooled.ravel(), log_mean_exp]), atol=1e-5)


def test_light_pool_starts_as_centroids_of_increasing_sharpness_in_npho():
    pool = LightPool(in_channels=3, heads=4)
    npho_weights = pool.score.weight.detach()[:, 0]
    assert torch.all(npho_weights[1:] > npho_weights[:-1]) and torch.all(npho_weights > 0)
    assert torch.count_nonzero(pool.score.weight.detach()[:, 1:]) == 0
    inputs = torch.zeros(1, 5, 3)
    inputs[0, :, 0] = torch.tensor([0.0, 0.1, 1.0, 0.6, 0.0])  # a light peak at position 2, skewed
    inputs[0, :, 2] = torch.arange(5.0)  # its coordinate
    centroids = pool(inputs, None)[0, :-4].reshape(4, 3)[:, 2]
    assert torch.all((centroids[1:] - 2.0).abs() < (centroids[:-1] - 2.0).abs())
