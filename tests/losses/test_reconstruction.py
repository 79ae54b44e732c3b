"""ReconstructionLoss: masked-only, per-face/channel means, time gating, weighting, metrics; tiny MAE overfit."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lib.geometry import FACE_NAMES, N_SENSORS, face_ids
from lib.losses import ReconstructionLoss
from lib.config.model_schema import ModelConfig
from lib.models.mae import XECMAE
from lib.normalization import NormalizationConfig

NORM = NormalizationConfig()
INNER, TOP = torch.tensor(face_ids("inner")), torch.tensor(face_ids("top"))


def _loss(**overrides) -> ReconstructionLoss:
    kwargs = dict(predict_channels=["npho", "time"], loss_fn="smooth_l1", beta=1.0, npho_weight=1.0,
                  time_weight=1.0, use_npho_weight=False, auto_channel_weight=False, track_mae_rmse=False)
    return ReconstructionLoss(**{**kwargs, **overrides})


def _raw_npho_to_normalized(raw: torch.Tensor) -> torch.Tensor:
    """Independent log1p forward with the default scales."""
    return torch.log1p(raw / NORM.npho_scale) / NORM.npho_scale2


def _inputs(batch: int = 2, seed: int = 0):
    """x with raw npho 200..2000 (all above the time threshold), every sensor valid, ~half masked."""
    gen = torch.Generator().manual_seed(seed)
    raw = 200 + 1800 * torch.rand(batch, N_SENSORS, generator=gen)
    x = torch.stack([_raw_npho_to_normalized(raw), torch.randn(batch, N_SENSORS, generator=gen)], dim=-1)
    valid = torch.ones(batch, N_SENSORS, dtype=torch.bool)
    mask = torch.rand(batch, N_SENSORS, generator=gen) < 0.5
    return x, mask, valid, valid.clone()


def test_zero_when_masked_entries_are_exact_even_if_unmasked_are_wrong():
    x, mask, npho_valid, time_valid = _inputs()
    pred = torch.where(mask.unsqueeze(-1), x, x + 7.0)
    loss, _ = _loss()(pred, x, mask, npho_valid, time_valid)
    assert loss.item() == 0.0
    assert (_loss()(x + 0.5, x, mask, npho_valid, time_valid)[0] > 0).item()


def test_unmasked_predictions_do_not_change_the_loss():
    x, mask, npho_valid, time_valid = _inputs()
    pred = x + torch.randn_like(x)
    other = torch.where(mask.unsqueeze(-1), pred, torch.randn_like(x) * 100)
    loss_fn = _loss()
    reference = loss_fn(pred, x, mask, npho_valid, time_valid)[0]
    assert torch.equal(loss_fn(other, x, mask, npho_valid, time_valid)[0], reference)


def test_time_loss_takes_the_time_valid_sensors_and_applies_no_threshold_of_its_own():
    x, mask, npho_valid, time_valid = _inputs()
    mask[:] = False
    mask[0, INNER[:30]] = True
    x[0, INNER[:10], 0] = _raw_npho_to_normalized(torch.full((10,), 5.0))  # dim, yet time-valid: counts
    time_valid[0, INNER[10:20]] = False
    pred = x.clone()
    pred[0, INNER[10:20], 1] += 3.0  # wrong time only where time is invalid
    loss_fn = _loss()
    _, metrics = loss_fn(pred, x, mask, npho_valid, time_valid)
    assert metrics["loss_time"].item() == 0.0
    pred[0, INNER[3], 1] += 3.0  # a dim sensor that the loader called time-valid
    _, metrics = loss_fn(pred, x, mask, npho_valid, time_valid)
    expected = F.smooth_l1_loss(torch.tensor(3.0), torch.tensor(0.0)).item() / 20  # 1 of the 20 eligible entries
    assert metrics["loss_time"].item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name, functional", [
    ("smooth_l1", lambda p, t: F.smooth_l1_loss(p, t, beta=0.5)),
    ("huber", lambda p, t: F.huber_loss(p, t, delta=0.5)),
    ("mse", F.mse_loss),
    ("l1", F.l1_loss),
])
def test_each_loss_fn_matches_torch_and_faces_count_equally(name, functional):
    x, mask, npho_valid, time_valid = _inputs()
    pred = x + 2 * torch.randn_like(x)
    mask[:] = False
    mask[:, INNER[:100]] = True
    loss_fn = _loss(predict_channels=["npho"], loss_fn=name, beta=0.5)
    inner_only = functional(pred[:, INNER[:100], :1], x[:, INNER[:100], :1])
    loss, _ = loss_fn(pred[..., :1], x, mask, npho_valid, time_valid)
    assert loss.item() == pytest.approx(inner_only.item(), rel=1e-5)
    mask[1, TOP[:5]] = True  # few entries, yet the top face weighs as much as the inner face
    top_only = functional(pred[1, TOP[:5], :1], x[1, TOP[:5], :1])
    loss, metrics = loss_fn(pred[..., :1], x, mask, npho_valid, time_valid)
    assert loss.item() == pytest.approx((inner_only.item() + top_only.item()) / 2, rel=1e-5)
    assert metrics["loss_top_npho"].item() == pytest.approx(top_only.item(), rel=1e-5)


def test_time_loss_is_weighted_by_the_batch_time_weight():
    x, mask, npho_valid, time_valid = _inputs()
    mask[:] = False
    ids = INNER[:50]
    mask[0, ids] = True
    pred = x + torch.randn_like(x)
    time_weight = torch.rand(x.shape[:2], generator=torch.Generator().manual_seed(3)) * 40  # e.g. sqrt(raw npho)
    elementwise = F.mse_loss(pred[0, ids, 1], x[0, ids, 1], reduction="none")
    expected = (time_weight[0, ids] * elementwise).sum() / time_weight[0, ids].sum()
    _, metrics = _loss(loss_fn="mse", use_npho_weight=True)(pred, x, mask, npho_valid, time_valid, time_weight)
    assert metrics["loss_time"].item() == pytest.approx(expected.item(), rel=1e-5)
    _, unweighted = _loss(loss_fn="mse")(pred, x, mask, npho_valid, time_valid, time_weight)
    assert unweighted["loss_time"].item() == pytest.approx(elementwise.mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="use_npho_weight needs the batch's time_weight"):
        _loss(use_npho_weight=True)(pred, x, mask, npho_valid, time_valid)


def test_channel_weights_and_learned_channel_weighting():
    x, mask, npho_valid, time_valid = _inputs()
    pred = x + torch.randn_like(x)
    _, plain = _loss()(pred, x, mask, npho_valid, time_valid)
    weighted, _ = _loss(npho_weight=2.0, time_weight=0.5)(pred, x, mask, npho_valid, time_valid)
    assert weighted.item() == pytest.approx(2 * plain["loss_npho"].item() + 0.5 * plain["loss_time"].item(), rel=1e-5)

    loss_fn = _loss(auto_channel_weight=True)
    with torch.no_grad():
        loss_fn.auto_weight.log_vars.copy_(torch.tensor([0.3, -0.2]))
    loss, _ = loss_fn(pred, x, mask, npho_valid, time_valid)
    expected = (math.exp(-0.3) * plain["loss_npho"] + 0.3 + math.exp(0.2) * plain["loss_time"] - 0.2).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    grad = loss_fn.auto_weight.log_vars.grad
    assert grad is not None and (grad != 0).all()


def test_metrics_keys_present_and_finite():
    x, mask, npho_valid, time_valid = _inputs()
    npho_valid[0, :100] = False
    mask &= npho_valid
    _, metrics = _loss(track_mae_rmse=True)(x + 0.1, x, mask, npho_valid, time_valid)
    expected = {"total_loss", "loss_npho", "loss_time", "actual_mask_ratio"}
    for channel in ("npho", "time"):
        expected |= {f"mae_{channel}", f"rmse_{channel}"}
        expected |= {f"{kind}_{face}_{channel}" for kind in ("loss", "mae", "rmse") for face in FACE_NAMES}
    expected |= {f"loss_{face}" for face in FACE_NAMES}
    assert expected <= set(metrics)
    assert all(torch.isfinite(value) and value.ndim == 0 and not value.requires_grad for value in metrics.values())
    assert metrics["actual_mask_ratio"].item() == pytest.approx(mask.sum().item() / npho_valid.sum().item())
    assert metrics["mae_npho"].item() == pytest.approx(0.1, rel=1e-4)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="loss_fn"):
        _loss(loss_fn="l3")
    x, mask, npho_valid, time_valid = _inputs()
    with pytest.raises(ValueError, match="pred"):
        _loss()(x[..., :1], x, mask, npho_valid, time_valid)
    with pytest.raises(ValueError, match="time_valid"):
        _loss()(x, x, mask, npho_valid, time_valid.float())


@pytest.fixture
def one_thread():
    """One intra-op thread: on a shared, loaded CPU extra threads spin and make step times erratic."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_tiny_mae_overfits_one_batch(one_thread):
    torch.manual_seed(0)
    model = XECMAE(ModelConfig(preset="tiny"), NORM)
    loss_fn = _loss()
    x, _, npho_valid, time_valid = _inputs(batch=1)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        out = model(x, npho_valid, time_valid, mask_ratio=0.6, generator=torch.Generator().manual_seed(0))
        loss, _ = loss_fn(out["pred"], x, out["mask"], npho_valid, time_valid)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
