"""XECInpainter: predictions at masked sensors only, from visible inputs only; per-face heads with the face's
tokens; a frozen encoder; untrained heads give the neighbour average."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.config import InpainterConfig, load_config
from lib.geometry import N_SENSORS, face_ids, face_neighbours
from lib.models.inpainter import XECInpainter, face_of_token
from lib.models.masking import random_mask

BATCH = 4


@pytest.fixture(scope="module")
def cfg() -> InpainterConfig:
    return load_config(None, ["model.preset=tiny", "model.predict_channels=[npho, time]"], root=InpainterConfig)


@pytest.fixture(scope="module")
def model(cfg) -> XECInpainter:
    torch.manual_seed(0)
    return XECInpainter(cfg.model, cfg.normalization).eval()


@pytest.fixture(scope="module")
def event():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, N_SENSORS, 2, generator=generator)
    npho_valid = torch.rand(BATCH, N_SENSORS, generator=generator) > 0.02
    time_valid = npho_valid & (torch.rand(BATCH, N_SENSORS, generator=generator) > 0.3)
    mask = random_mask(npho_valid, time_valid, 0.05, generator=generator)
    return x, npho_valid, time_valid, mask


def test_predicts_every_channel_at_the_masked_sensors_only(model, event):
    x, npho_valid, time_valid, mask = event
    with torch.no_grad():
        pred = model(x, npho_valid, time_valid, mask)
    assert pred.shape == (BATCH, N_SENSORS, 2)
    assert (pred[mask] != 0).all() and (pred[~mask] == 0).all()


def test_masked_inputs_never_reach_the_prediction(model, event):
    x, npho_valid, time_valid, mask = event
    changed = x.clone()
    changed[mask] = 7.0
    with torch.no_grad():
        assert torch.equal(model(x, npho_valid, time_valid, mask), model(changed, npho_valid, time_valid, mask))


def test_a_visible_neighbour_changes_the_prediction_of_its_sensor(model, event):
    x, npho_valid, time_valid, _ = event
    sensor = int(face_ids("inner")[1000])
    neighbour = int(face_neighbours()[sensor, 0])
    mask = torch.zeros_like(npho_valid)
    mask[:, sensor] = True
    npho_valid, time_valid = npho_valid.clone(), time_valid.clone()
    npho_valid[:, [sensor, neighbour]] = time_valid[:, [sensor, neighbour]] = True
    brighter = x.clone()
    brighter[:, neighbour, 0] += 1.0
    with torch.no_grad():
        before, after = model(x, npho_valid, time_valid, mask), model(brighter, npho_valid, time_valid, mask)
    assert not torch.allclose(before[:, sensor], after[:, sensor])


def test_each_face_head_reads_its_own_tokens_and_the_whole_event(model, cfg):
    assert [face_of_token(token) for token in model.encoder.token_names] == [
        "inner", "outer", "outer", "us", "ds", "top", "bottom"]
    widths = [head.context[0].normalized_shape[0] for head in model.heads.heads]
    dim = cfg.model.encoder_dim
    assert widths == [2 * dim, 3 * dim, 2 * dim, 2 * dim, 2 * dim, 2 * dim]  # outer: coarse + dense + event


def test_every_head_takes_part_in_backward_even_without_masked_sensors(cfg, event):
    x, npho_valid, time_valid, _ = event
    model = XECInpainter(cfg.model, cfg.normalization)
    mask = torch.zeros_like(npho_valid)
    mask[:, :5] = True  # only inner sensors (ids 0-4): five heads see no rows
    model(x, npho_valid, time_valid, mask).sum().backward()
    assert all(param.grad is not None for param in model.heads.parameters())  # what DDP needs to see


def test_frozen_encoder_has_no_trainable_weights_and_stays_in_eval_mode(cfg):
    frozen = load_config(None, ["model.preset=tiny", "model.freeze_encoder=true"], root=InpainterConfig)
    model = XECInpainter(frozen.model, frozen.normalization).train()
    assert not any(param.requires_grad for param in model.encoder.parameters())
    assert all(param.requires_grad for param in model.heads.parameters())
    assert not model.encoder.training and model.heads.training


def test_dense_heads_give_the_masked_rows_values(model, event):
    x, npho_valid, time_valid, mask = event
    with torch.no_grad():
        rows, dense = model(x, npho_valid, time_valid, mask), model(x, npho_valid, time_valid, mask, dense=True)
    torch.testing.assert_close(dense, rows, rtol=1e-5, atol=1e-6)
    assert (dense[~mask] == 0).all()


def test_an_untrained_inpainter_predicts_the_mean_of_the_visible_neighbours(cfg, event):
    x, npho_valid, time_valid, mask = event
    with torch.no_grad():
        pred = XECInpainter(cfg.model, cfg.normalization)(x, npho_valid, time_valid, mask)
    neighbours = torch.from_numpy(np.array(face_neighbours()))
    for b, sensor in mask.nonzero().tolist()[:40]:
        around = neighbours[sensor][neighbours[sensor] >= 0]
        for channel, valid in enumerate((npho_valid, time_valid)):
            seen = around[(valid[b] & ~mask[b])[around]]
            expected = x[b, seen, channel].mean() if len(seen) else torch.tensor(0.0)
            torch.testing.assert_close(pred[b, sensor, channel], expected, rtol=1e-5, atol=1e-6)
