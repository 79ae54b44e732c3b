"""Regression tasks: config parsing, standardization, losses, validity, reweighting, balancing."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ValidationError

from lib.tasks import SELECTED, TASK_REGISTRY, TaskBalancer, TaskConfig, TasksConfig, build_tasks, parse_tasks

B = 64


def _batch(rng: np.random.Generator, n: int = B) -> dict[str, torch.Tensor]:
    """Synthetic truth in physical units, as the loader delivers it."""
    theta = rng.uniform(60, 120, n)
    phi = rng.uniform(-60, 60, n)  # MEG: phi = atan2(y, -x), about 0 towards the detector on the -x side
    vec = np.stack([-np.sin(np.radians(theta)) * np.cos(np.radians(phi)),
                    np.sin(np.radians(theta)) * np.sin(np.radians(phi)), np.cos(np.radians(theta))], 1)
    as_tensor = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    return {
        "energyTruth": as_tensor(rng.uniform(0.015, 0.06, n)),
        "timeTruth": as_tensor(rng.normal(-2e-10, 3e-10, n)),
        "uvwTruth": as_tensor(np.stack([rng.uniform(-30, 30, n), rng.uniform(-70, 70, n), rng.exponential(4, n)], 1)),
        "emiAng": as_tensor(np.stack([theta, phi], 1)),
        "emiVec": as_tensor(vec),
    }


def _fitted(name: str, rng: np.random.Generator, **settings) -> tuple:
    task = build_tasks(parse_tasks({name: settings}))[name]
    batch = _batch(rng, 500)
    task.fit(task.target(batch))
    return task, batch


# --- parse_tasks ----------------------------------------------------------------------------------
def test_parse_tasks_list_and_mapping_forms():
    from_list = parse_tasks(["energy", "position"])
    assert list(from_list) == ["energy", "position"]
    assert from_list["energy"] == TaskConfig()
    from_mapping = parse_tasks({"angle": {"use_vector": True}, "timing": None, "energy": {"loss": "l1", "beta": 0.5}})
    assert from_mapping["angle"].use_vector and from_mapping["timing"] == TaskConfig()
    assert from_mapping["energy"].loss == "l1" and from_mapping["energy"].beta == 0.5


def test_parse_tasks_rejects_empty_selection():
    for empty in ([], {}):
        with pytest.raises(ValueError, match="empty"):
            parse_tasks(empty)


def test_parse_tasks_unknown_name_lists_known_and_suggests():
    with pytest.raises(ValueError) as info:
        parse_tasks(["energy", "postion"])
    message = str(info.value)
    assert "postion" in message and "did you mean 'position'" in message
    assert all(name in message for name in TASK_REGISTRY)


@pytest.mark.parametrize("value, fragment", [
    ({"energy": {"use_vector": True}}, "use_vector"),
    ({"angle": {"use_vector": True, "loss": "mse"}}, "cosine"),
    ({"position": {"target_mean": [0.0], "target_scale": [1.0]}}, "3 value"),
    ({"energy": {"target_mean": [0.0]}}, "together"),
    ({"energy": {"target_mean": [0.0], "target_scale": [0.0]}}, "> 0"),
    ({"energy": {"los": "l1"}}, "los"),
    (["energy", "energy"], "more than once"),
])
def test_parse_tasks_rejects_bad_settings(value, fragment):
    with pytest.raises(ValueError, match=fragment):
        parse_tasks(value)


def test_tasks_config_type_in_a_root_schema():
    class Root(BaseModel):
        tasks: TasksConfig

    assert list(Root(tasks=["angle"]).tasks) == ["angle"]
    with pytest.raises(ValidationError, match="did you mean 'timing'"):
        Root(tasks={"timeing": {}})


def test_build_tasks_only_selected():
    tasks = build_tasks(parse_tasks(["position"]))
    assert list(tasks) == ["position"] and tasks["position"].n_outputs == 3


# --- standardization --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(TASK_REGISTRY))
def test_standardization_round_trip(name):
    task, batch = _fitted(name, np.random.default_rng(0))
    target = task.target(batch).double()
    np.testing.assert_allclose(task.standardizer.mean.numpy(), target.mean(0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(task.standardizer.scale.numpy(), target.std(0).numpy(), rtol=1e-6)
    z = (target - target.mean(0)) / target.std(0)
    head_out = torch.cat([z, torch.zeros_like(z)], 1)[:, : task.head_dim].float()
    atol = 1e-6 * target.abs().max().item()
    np.testing.assert_allclose(task.predict(head_out).numpy(), target.numpy(), rtol=1e-5, atol=atol)


def test_standardization_state_travels_in_state_dict():
    task, batch = _fitted("timing", np.random.default_rng(1))
    fresh = build_tasks(parse_tasks(["timing"]))["timing"]
    fresh.load_state_dict(task.state_dict())
    head_out = torch.randn(8, 1)
    torch.testing.assert_close(fresh.predict(head_out), task.predict(head_out))


def test_configured_standardization_needs_no_fit_and_unfitted_task_raises():
    configured = build_tasks(parse_tasks({"energy": {"target_mean": [0.04], "target_scale": [0.01]}}))["energy"]
    assert configured.predict(torch.tensor([[1.0]])).item() == pytest.approx(0.05)
    unfitted = build_tasks(parse_tasks(["energy"]))["energy"]
    with pytest.raises(RuntimeError, match=r"call fit\(training targets\)"):
        unfitted.predict(torch.tensor([[1.0]]))


# --- losses ---------------------------------------------------------------------------------------
MEAN, SCALE = [1.0, -2.0, 4.0], [2.0, 0.5, 4.0]


def _position_task(**settings):
    return build_tasks(parse_tasks({"position": {"target_mean": MEAN, "target_scale": SCALE, **settings}}))["position"]


@pytest.mark.parametrize("settings, reference", [
    ({"loss": "smooth_l1", "beta": 0.5}, lambda p, t: F.smooth_l1_loss(p, t, reduction="none", beta=0.5)),
    ({"loss": "l1"}, lambda p, t: (p - t).abs()),
    ({"loss": "mse"}, lambda p, t: (p - t) ** 2),
])
def test_loss_matches_functional_on_standardized_targets(settings, reference):
    task = _position_task(**settings)
    truth = torch.tensor([[3.0, -2.0, 0.0], [1.0, -1.0, 8.0]])
    head_out = torch.tensor([[0.2, 0.9, -3.0], [0.0, 0.1, 0.4]])
    standardized = (truth - torch.tensor(MEAN)) / torch.tensor(SCALE)
    expected = reference(head_out, standardized).mean(1)
    torch.testing.assert_close(task.loss(head_out, {"uvwTruth": truth}), expected)


def test_smooth_l1_by_hand():
    task = build_tasks(parse_tasks({"energy": {"beta": 0.5, "target_mean": [0.0], "target_scale": [1.0]}}))["energy"]
    head_out = torch.tensor([[0.2], [2.0]])
    losses = task.loss(head_out, {"energyTruth": torch.tensor([0.0, 0.0])})
    torch.testing.assert_close(losses, torch.tensor([0.5 * 0.2**2 / 0.5, 2.0 - 0.25]))


def test_gaussian_nll_matches_functional_and_prefers_the_true_variance():
    task = _position_task(loss="gaussian_nll")
    assert task.head_dim == 6
    truth = torch.tensor([[3.0, -2.0, 0.0]])
    residual_z = torch.tensor([[0.5, -1.0, 2.0]])
    mean_z = (truth - torch.tensor(MEAN)) / torch.tensor(SCALE) + residual_z

    def loss_at(log_var: torch.Tensor) -> torch.Tensor:
        return task.loss(torch.cat([mean_z, log_var], 1), {"uvwTruth": truth})

    matched = (residual_z**2).log()
    expected = F.gaussian_nll_loss(mean_z - residual_z, mean_z, matched.exp(), reduction="none").mean(1)
    torch.testing.assert_close(loss_at(matched), expected)
    for shift in (-2.0, -0.5, 0.5, 2.0):
        assert loss_at(matched + shift).item() > loss_at(matched).item()
    sigma = task.predict_sigma(torch.cat([mean_z, matched], 1))
    torch.testing.assert_close(sigma, (residual_z.abs() * torch.tensor(SCALE)).double())


def test_angle_vector_mode_uses_cosine_loss_and_returns_angles():
    task, batch = _fitted("angle", np.random.default_rng(2), use_vector=True)
    assert task.head_dim == 3
    head_out = 2.5 * batch["emiVec"] + 0.1 * torch.randn_like(batch["emiVec"])
    expected = 1 - (head_out * batch["emiVec"]).sum(1) / head_out.norm(dim=1)
    torch.testing.assert_close(task.loss(head_out, batch), expected, rtol=1e-5, atol=1e-6)
    exact = task.predict(3.0 * batch["emiVec"])
    torch.testing.assert_close(exact.float(), batch["emiAng"], rtol=0, atol=1e-3)


def test_nan_truth_is_invalid_and_gets_no_loss_or_gradient():
    task = _position_task()
    truth = torch.tensor([[3.0, -2.0, 0.0], [float("nan"), 1.0, 1.0], [1.0, float("inf"), 1.0]])
    valid = task.valid({"uvwTruth": truth})
    assert valid.tolist() == [True, False, False]
    head_out = torch.randn(3, 3, requires_grad=True)
    losses = task.loss(head_out, {"uvwTruth": truth})
    assert torch.isfinite(losses).all() and losses[1:].eq(0).all() and losses[0] > 0
    losses.sum().backward()
    assert torch.isfinite(head_out.grad).all() and head_out.grad[1:].eq(0).all()


def test_fill_value_truth_is_invalid_like_nan():
    # the experiment's files write 1e10 where a value is missing; |x| > 9e9 is missing
    task = _position_task()
    truth = torch.tensor([[3.0, -2.0, 0.0], [1e10, 1e10, 1e10], [1.0, -9.5e9, 1.0], [1.0, 8.9e9, 1.0]])
    assert task.valid({"uvwTruth": truth}).tolist() == [True, False, False, True]
    assert task.loss(torch.zeros(4, 3), {"uvwTruth": truth})[1:3].eq(0).all()


def test_selected_column_makes_events_invalid_for_every_task():
    tasks = build_tasks(parse_tasks(["energy", "position"]))
    batch = {**_batch(np.random.default_rng(0), 4), SELECTED: torch.tensor([True, False, True, False])}
    for task in tasks.values():
        assert task.valid(batch).tolist() == [True, False, True, False]


@pytest.mark.parametrize("mode", ["manual", "learned"])
def test_a_task_without_valid_events_contributes_no_loss_or_gradient(mode):
    balancer = TaskBalancer(["energy", "position"], mode)
    with torch.no_grad():
        if balancer.log_vars is not None:
            balancer.log_vars.copy_(torch.tensor([0.5, 0.5]))
    energy = torch.tensor(2.0, requires_grad=True)
    total, _ = balancer({"energy": energy, "position": torch.tensor(0.0)},
                        {"energy": torch.tensor(True), "position": torch.tensor(False)})
    total.backward()
    alone, _ = TaskBalancer(["energy"], mode)({"energy": torch.tensor(2.0)})
    if balancer.log_vars is not None:
        assert balancer.log_vars.grad[1].item() == 0.0  # the log-variance term is gone too
        assert total.item() == pytest.approx(math.exp(-0.5) * 2.0 + 0.5)
    else:
        assert total.item() == pytest.approx(alone.item())


def test_nan_and_fill_rows_are_ignored_when_fitting():
    task = build_tasks(parse_tasks(["energy"]))["energy"]
    targets = torch.tensor([[1.0], [3.0], [float("nan")], [1e10], [5.0]])
    task.fit(targets)
    assert task.standardizer.mean.item() == pytest.approx(3.0)
    assert task.standardizer.scale.item() == pytest.approx(2.0)


def test_reweighting_gives_rare_bins_larger_weights():
    task = build_tasks(parse_tasks({"energy": {"reweight_bins": 4}}))["energy"]
    common, rare = 0.02, 0.05
    targets = torch.tensor([[common]] * 90 + [[rare]] * 10)
    task.fit(targets)
    weights = task.reweighting(targets.double())
    assert weights[-1].item() == pytest.approx(9 * weights[0].item(), rel=1e-5)
    assert weights.mean().item() == pytest.approx(1.0, rel=1e-5)
    losses = task.loss(torch.zeros(2, 1), {"energyTruth": torch.tensor([common, rare])})
    plain = build_tasks(parse_tasks({"energy": {"target_mean": task.standardizer.mean.tolist(),
                                                "target_scale": task.standardizer.scale.tolist()}}))["energy"]
    plain_losses = plain.loss(torch.zeros(2, 1), {"energyTruth": torch.tensor([common, rare])})
    torch.testing.assert_close(losses, plain_losses * weights[[0, -1]])


def test_head_output_shape_is_checked():
    task = _position_task()
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        task.predict(torch.zeros(4, 2))


# --- balancing ------------------------------------------------------------------------------------
def test_manual_balancing_is_the_weighted_sum():
    balancer = TaskBalancer(["energy", "position"], "manual", {"energy": 2.0})
    total, metrics = balancer({"energy": torch.tensor(1.5), "position": torch.tensor(0.25)})
    assert total.item() == pytest.approx(2.0 * 1.5 + 0.25)
    assert metrics["loss/energy"].item() == pytest.approx(3.0)


def test_learned_balancing_has_gradients_on_log_variances():
    balancer = TaskBalancer(["energy", "position"], "learned")
    with torch.no_grad():
        balancer.log_vars.copy_(torch.tensor([0.0, math.log(2.0)]))
    losses = {"energy": torch.tensor(3.0), "position": torch.tensor(0.5)}
    total, metrics = balancer(losses)
    assert total.item() == pytest.approx(3.0 + 0.5 / 2 + math.log(2.0))
    total.backward()
    # d/ds (exp(-s) L + s) = 1 - exp(-s) L
    torch.testing.assert_close(balancer.log_vars.grad, torch.tensor([1 - 3.0, 1 - 0.5 / 2]))
    assert "log_var/position" in metrics


@pytest.mark.parametrize("losses, fragment", [
    ({"energy": torch.tensor(1.0)}, "expected exactly"),
    ({"energy": torch.ones(3), "position": torch.tensor(1.0)}, "scalar"),
])
def test_balancer_rejects_bad_losses(losses, fragment):
    with pytest.raises(ValueError, match=fragment):
        TaskBalancer(["energy", "position"], "manual")(losses)


def test_balancer_rejects_weights_of_unselected_tasks():
    with pytest.raises(ValueError, match="angle"):
        TaskBalancer(["energy"], "learned", {"angle": 1.0})


def test_state_of_checkpoints_with_flat_target_keys_still_loads():
    # before the standardizer and the reweighting became submodules their buffers sat on the target itself
    task, _ = _fitted("energy", np.random.default_rng(4), reweight_bins=3)
    flat = {"target_mean": task.standardizer.mean, "target_scale": task.standardizer.scale,
            "fitted": task.standardizer.fitted, "reweight_edges": task.reweighting.edges,
            "reweight_table": task.reweighting.table}
    fresh = build_tasks(parse_tasks({"energy": {"reweight_bins": 3}}))["energy"]
    fresh.load_state_dict(flat)
    head_out, truth = torch.randn(5, 1), {"energyTruth": torch.rand(5)}
    torch.testing.assert_close(fresh.predict(head_out), task.predict(head_out))
    torch.testing.assert_close(fresh.loss(head_out, truth), task.loss(head_out, truth))
