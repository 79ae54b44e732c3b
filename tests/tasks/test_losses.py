"""The relative energy losses, the log-energy target and beta-NLL: values by hand, gradients, and a tiny regressor
that learns with each loss."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lib.config.task_schema import TASK_SPECS
from lib.tasks import build_tasks, parse_tasks
from lib.tasks.metrics import half_width_68

MEAN, SCALE = 0.05, 0.01  # configured standardization of E (GeV): z = (E - 0.05) / 0.01


def _energy(**settings):
    return build_tasks(parse_tasks({"energy": settings}))["energy"]


def _batch(energies) -> dict[str, torch.Tensor]:
    return {"energyTruth": torch.tensor(energies, dtype=torch.float32)}


@pytest.mark.parametrize("loss, expected", [
    ("relative_l1", [0.2, 0.1]),
    ("relative_mse", [0.04, 0.01]),
    ("relative_smooth_l1", [0.2 - 0.5 * 0.15, 0.5 * 0.1**2 / 0.15]),  # relative_beta 0.15: linear, then quadratic
])
def test_relative_losses_by_hand_on_physical_values(loss, expected):
    task = _energy(loss=loss, relative_beta=0.15, target_mean=[MEAN], target_scale=[SCALE])
    head = torch.tensor([[1.0], [-0.5]], requires_grad=True)  # E_pred 0.06 and 0.045 GeV for E_true 0.05
    values = task.loss(head, _batch([0.05, 0.05]))
    assert values.dtype == torch.float32
    np.testing.assert_allclose(values.detach().numpy(), expected, rtol=1e-5)
    values.sum().backward()
    assert torch.isfinite(head.grad).all()


def test_relative_loss_divides_by_each_events_own_energy():
    task = _energy(loss="relative_l1", target_mean=[MEAN], target_scale=[SCALE])
    head = torch.tensor([[0.5], [0.5]])  # E_pred = 0.055 GeV for both
    values = task.loss(head, _batch([0.05, 0.025]))
    np.testing.assert_allclose(values.numpy(), [0.005 / 0.05, 0.03 / 0.025], rtol=1e-5)


def test_relative_losses_skip_events_without_a_positive_energy():
    task = _energy(loss="relative_mse", target_mean=[MEAN], target_scale=[SCALE])
    head = torch.zeros(3, 1, requires_grad=True)
    values = task.loss(head, _batch([0.04, 0.0, -0.01]))
    assert task.valid(_batch([0.04, 0.0, -0.01])).tolist() == [True, False, False]
    values.sum().backward()
    assert values[1:].tolist() == [0.0, 0.0] and torch.isfinite(head.grad).all() and head.grad[1:].abs().sum() == 0


def test_log_target_standardizes_log_energy_and_predicts_energy():
    energies = torch.tensor([0.01, 0.02, 0.04, 0.08], dtype=torch.float64)
    task = _energy(loss="mse", log_target=True)
    task.fit(energies[:, None])
    logs = energies.log()
    assert task.standardizer.mean.item() == pytest.approx(logs.mean().item())
    assert task.standardizer.scale.item() == pytest.approx(logs.std().item())
    z = ((logs - logs.mean()) / logs.std()).float()[:, None]
    np.testing.assert_allclose(task.predict(z).numpy()[:, 0], energies.numpy(), rtol=1e-6)  # back in GeV
    head = torch.zeros(4, 1)  # predicts exp(mean log E), the geometric mean
    np.testing.assert_allclose(task.loss(head, {"energyTruth": energies.float()}).numpy(), (z[:, 0] ** 2).numpy(),
                               rtol=1e-5)


def test_log_target_with_a_predicted_sigma_gives_sigma_in_energy_units():
    task = _energy(loss="gaussian_nll", log_target=True, target_mean=[math.log(0.05)], target_scale=[0.5])
    head = torch.tensor([[0.0, math.log(0.1**2 / 0.5**2)]])  # sigma of log E = 0.1 at E = 0.05 GeV
    assert task.predict(head).item() == pytest.approx(0.05)
    assert task.predict_sigma(head).item() == pytest.approx(0.05 * 0.1)


@pytest.mark.parametrize("name, setting", [("position", {"loss": "relative_l1"}), ("timing", {"log_target": True})])
def test_relative_losses_and_the_log_target_are_refused_outside_energy(name, setting):
    assert not TASK_SPECS[name].positive
    with pytest.raises(ValueError, match="positive truth"):
        parse_tasks({name: setting})


def test_beta_nll_weights_the_gaussian_nll_by_the_detached_variance():
    task = _energy(loss="beta_nll", nll_beta=0.5, target_mean=[MEAN], target_scale=[SCALE])
    log_var = math.log(4.0)
    head = torch.tensor([[1.0, log_var]], requires_grad=True)
    value = task.loss(head, _batch([0.05]))  # z_true 0, mu 1, variance 4
    nll = 0.5 * (log_var + 1.0 / 4.0)
    assert value.item() == pytest.approx(4.0**0.5 * nll)
    value.backward()
    assert head.grad[0, 0].item() == pytest.approx(4.0**0.5 * 1.0 / 4.0)  # d/dmu: variance^beta (mu - z) / variance
    assert head.grad[0, 1].item() == pytest.approx(4.0**0.5 * 0.5 * (1 - 1.0 / 4.0))  # no gradient via the weight
    assert task.head_dim == 2 and task.predicts_sigma


@pytest.mark.parametrize("nll_beta, reference", [(0.0, "gaussian_nll"), (1.0, "mse")])
def test_beta_nll_limits(nll_beta, reference):
    """beta 0 is the Gaussian NLL; beta 1 gives the mean the gradient of mse / 2, whatever the variance."""
    task = _energy(loss="beta_nll", nll_beta=nll_beta, target_mean=[MEAN], target_scale=[SCALE])
    head = torch.tensor([[0.7, 1.3], [-0.4, -2.0]], requires_grad=True)
    task.loss(head, _batch([0.05, 0.06])).sum().backward()
    z_true = torch.tensor([0.0, 1.0])
    mean = head.detach()[:, 0].clone().requires_grad_(True)
    if reference == "gaussian_nll":
        F.gaussian_nll_loss(mean, z_true, head.detach()[:, 1].exp(), reduction="sum").backward()
    else:
        (0.5 * (mean - z_true) ** 2).sum().backward()
    torch.testing.assert_close(head.grad[:, 0], mean.grad)


LOSSES = ["smooth_l1", "l1", "mse", "gaussian_nll", "beta_nll", "relative_l1", "relative_smooth_l1", "relative_mse"]


@pytest.mark.parametrize("log_target", [False, True], ids=["E", "logE"])
@pytest.mark.parametrize("loss", LOSSES)
def test_a_tiny_regressor_learns_the_energy_with_each_loss(loss, log_target):
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(256, 4, generator=generator)
    energy = 0.05 * torch.exp(0.4 * torch.tanh(features @ torch.tensor([1.0, -0.5, 0.3, 0.0])))
    task = _energy(loss=loss, log_target=log_target, relative_beta=0.02)
    task.fit(energy[:, None])
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 32), torch.nn.Tanh(), torch.nn.Linear(32, task.head_dim))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)

    def relative_width() -> float:
        with torch.no_grad():
            pred = task.predict(model(features))[:, 0]
        return half_width_68((pred / energy.double() - 1).numpy())

    before = relative_width()
    for _ in range(150):
        optimizer.zero_grad()
        task.loss(model(features), {"energyTruth": energy}).mean().backward()
        optimizer.step()
    assert relative_width() < 0.25 * before, (before, relative_width())
