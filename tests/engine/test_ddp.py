"""Two CPU ranks under torchrun (gloo): DDP gradients and sample-weighted metric reduction."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.config import DistributedConfig
from lib.engine import DistributedSetupError, init_distributed, load_checkpoint
from lib.engine.distributed import _first_slurm_host
from tests.engine.ddp_worker import ToyModel, toy_data

REPO = Path(__file__).resolve().parents[2]


def _torchrun_worker(*args: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "tests" / "engine" / "ddp_worker.py"), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_two_rank_gradients_and_metrics_match_a_single_process(tmp_path):
    _torchrun_worker(str(tmp_path))
    seen = torch.load(tmp_path / "ddp.pt", weights_only=False)
    assert seen["world_size"] == 2

    model = ToyModel()
    model.load_state_dict(seen["initial"])
    x, y = toy_data(8, seed=1)
    ((model(x) - y) ** 2).mean().backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(seen["grads"][name], param.grad, rtol=1e-5, atol=1e-7, msg=name)

    assert "ranks resolved different configs" in seen["config_mismatch"]
    all_values = torch.cat([torch.arange(3, dtype=torch.float64), torch.arange(5, dtype=torch.float64) + 10])
    assert seen["reduced"]["value"] == all_values.mean().item()

    last = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "last.pt")
    assert len(last["rank_states"]) == 2
    trained = ToyModel()
    trained.load_state_dict(last["model"])
    val_x, val_y = zip(toy_data(3, seed=20), toy_data(6, seed=21))  # rank 0 and rank 1 validation events
    with torch.no_grad():
        expected = ((trained(torch.cat(val_x)) - torch.cat(val_y)) ** 2).mean().item()
    assert abs(seen["final_metrics"]["val/loss"] - expected) < 1e-5 * expected


def test_a_signal_to_one_rank_stops_every_rank_at_the_same_step(tmp_path):
    _torchrun_worker(str(tmp_path), "preempt", "2")  # only rank 1 is signalled, in its third step
    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [rank["stopped"] for rank in seen] == [f"preempted at global step 3; resume from "
                                                   f"{tmp_path / 'preempted' / 'checkpoints' / 'last.pt'}"] * 2
    last = load_checkpoint(tmp_path / "preempted" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["global_step"]) == (0, 3, 3)
    assert [state["data"] for state in last["rank_states"]] == [rank["loader"] for rank in seen]
    assert all(rank["loader"]["position"] == 3 for rank in seen)


@pytest.mark.parametrize("nodelist, host", [("gpu[003-005,009],cpu01", "gpu003"), ("node7", "node7"),
                                            ("a-b[10,12]", "a-b10")])
def test_first_slurm_host(nodelist, host):
    assert _first_slurm_host(nodelist) == host


def test_single_slurm_task_is_a_single_process_and_nccl_needs_cuda(monkeypatch):
    for name in ["RANK", "WORLD_SIZE", "LOCAL_RANK"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    dist = init_distributed(DistributedConfig())
    assert (dist.rank, dist.world_size, dist.is_main) == (0, 1, True)
    if not torch.cuda.is_available():
        with pytest.raises(DistributedSetupError, match="nccl"):
            init_distributed(DistributedConfig(backend="nccl"))
