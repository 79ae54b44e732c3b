"""Resolution metrics (lib.tasks.metrics and the tasks' metrics) and the DDP gather."""
from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lib.tasks import build_tasks, gather_arrays, parse_tasks, resolution_metrics
from lib.tasks.metrics import half_width_68, opening_angles_deg, quantile_68, residual_summary

N_LARGE = 200_000


@pytest.fixture(scope="module")
def tasks():
    return build_tasks(parse_tasks(["energy", "timing", "position", "angle"]))


def test_gaussian_residuals_give_sigma_bias_and_rms():
    rng = np.random.default_rng(0)
    sigma, mu = 2.5, 0.7
    residuals = rng.normal(mu, sigma, N_LARGE)
    summary = residual_summary(residuals, "x")
    assert summary["x_w68"] == pytest.approx(sigma, rel=0.02)
    assert summary["x_bias"] == pytest.approx(mu, abs=0.03)
    assert summary["x_rms"] == pytest.approx(np.hypot(mu, sigma), rel=0.01)


def test_half_width_is_robust_to_tails():
    rng = np.random.default_rng(1)
    core = rng.normal(0.0, 1.0, N_LARGE)
    core[:1000] = 1e6  # 0.5 % outliers move the RMS enormously but the 68 % width barely
    assert half_width_68(core) == pytest.approx(1.0, rel=0.03)
    assert residual_summary(core, "x")["x_rms"] > 1e4


def test_resolutions_leave_out_fill_value_truth_and_count_it(tasks):
    # 1e10 fills once trained into resolutions of 7e11 %: they are left out and counted instead
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.04, 0.055, (100, 1))
    pred = truth * (1 + rng.normal(0.0, 0.02, (100, 1)))
    clean = resolution_metrics({"energy": tasks["energy"]}, {"energy": truth[4:]}, {"energy": pred[4:]})
    truth[:4] = [[1e10], [np.nan], [-1e10], [np.inf]]
    metrics = resolution_metrics({"energy": tasks["energy"]}, {"energy": truth}, {"energy": pred})
    assert metrics["skipped_fraction_energy"] == pytest.approx(0.04) and clean["skipped_fraction_energy"] == 0.0
    assert metrics["E_rel_w68_pct"] == pytest.approx(clean["E_rel_w68_pct"]) and metrics["E_rel_w68_pct"] < 3


def test_empty_residuals_give_nan():
    summary = residual_summary(np.array([]), "x")
    assert all(np.isnan(value) for value in summary.values())
    assert np.isnan(quantile_68(np.array([])))


def test_energy_relative_resolution(tasks):
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.015, 0.06, (N_LARGE, 1))
    relative_sigma = 0.03
    pred = truth * (1.0 + relative_sigma * rng.standard_normal((N_LARGE, 1)))
    metrics = tasks["energy"].metrics(pred, truth)
    assert metrics["E_rel_w68_pct"] == pytest.approx(100 * relative_sigma, rel=0.02)
    assert metrics["E_bias"] == pytest.approx(0.0, abs=1e-4)


def _chi3_quantile(probability: float) -> float:
    try:
        from scipy.stats import chi
    except ImportError:  # independent Monte Carlo of |N(0, I_3)|
        samples = np.linalg.norm(np.random.default_rng(99).standard_normal((2_000_000, 3)), axis=1)
        return float(np.quantile(samples, probability))
    return float(chi(3).ppf(probability))


def test_position_distance_68_on_isotropic_gaussian(tasks):
    rng = np.random.default_rng(3)
    sigma = 1.5
    truth = rng.uniform(-30, 30, (N_LARGE, 3))
    pred = truth + rng.normal(0.0, sigma, (N_LARGE, 3))
    metrics = tasks["position"].metrics(pred, truth)
    assert metrics["dist3d_68"] == pytest.approx(sigma * _chi3_quantile(0.6827), rel=0.02)
    for coordinate in "uvw":
        assert metrics[f"{coordinate}_w68"] == pytest.approx(sigma, rel=0.02)


def _theta_phi(vectors: np.ndarray) -> np.ndarray:
    theta = np.degrees(np.arccos(vectors[:, 2]))
    phi = np.degrees(np.arctan2(vectors[:, 1], -vectors[:, 0]))  # MEG's emiAng convention
    return np.stack([theta, phi], 1)


@pytest.mark.parametrize("angle_deg", [0.5, 2.0, 1e-3])
def test_opening_angle_of_known_rotations(tasks, angle_deg):
    rng = np.random.default_rng(4)
    n = 2000
    truth = rng.standard_normal((n, 3))
    truth /= np.linalg.norm(truth, axis=1, keepdims=True)
    axis = np.cross(truth, rng.standard_normal((n, 3)))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)  # perpendicular to truth
    alpha = np.radians(angle_deg)
    rotated = truth * np.cos(alpha) + np.cross(axis, truth) * np.sin(alpha)  # Rodrigues, axis . truth = 0
    opening = opening_angles_deg(_theta_phi(rotated), _theta_phi(truth))
    np.testing.assert_allclose(opening, angle_deg, rtol=1e-4)
    assert tasks["angle"].metrics(_theta_phi(rotated), _theta_phi(truth))["opening_68_deg"] == pytest.approx(
        angle_deg, rel=1e-4
    )


def test_angle_phi_residual_wraps(tasks):
    metrics = tasks["angle"].metrics(np.array([[90.0, 1.0]]), np.array([[90.0, 359.0]]))
    assert metrics["phi_bias"] == pytest.approx(2.0)
    assert metrics["opening_68_deg"] == pytest.approx(2.0)


def test_metrics_reject_wrong_shapes(tasks):
    with pytest.raises(ValueError, match="position"):
        tasks["position"].metrics(np.zeros((4, 2)), np.zeros((4, 3)))


def test_gather_without_distributed_returns_input():
    tensor = torch.arange(5.0)
    np.testing.assert_array_equal(gather_arrays(tensor), np.arange(5.0))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_residuals(rank: int) -> np.ndarray:
    return np.random.default_rng(rank).normal(rank, 1.0 + rank, (50 + 37 * rank, 3))


def _gather_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        gathered = gather_arrays(torch.from_numpy(_rank_residuals(rank)))
        np.save(os.path.join(out_dir, f"rank{rank}.npy"), gathered)
    finally:
        dist.destroy_process_group()


def test_ddp_gather_of_unequal_lengths_equals_concatenation(tmp_path):
    world_size = 2
    mp.spawn(_gather_worker, args=(world_size, _free_port(), str(tmp_path)), nprocs=world_size, join=True)
    expected = np.concatenate([_rank_residuals(rank) for rank in range(world_size)])
    for rank in range(world_size):
        np.testing.assert_array_equal(np.load(tmp_path / f"rank{rank}.npy"), expected)
