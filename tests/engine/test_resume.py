"""A resumed run reaches bit-for-bit the weights of an uninterrupted one (CPU, toy model)."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lib.engine import Trainer, load_checkpoint, prepare_run_dir
from lib.engine.distributed import DistInfo
from tests.engine.ddp_worker import Interrupted, ToyLoader, ToyModel, ToyTask, toy_config, toy_data
from tests.engine.toy_run import toy_trainer

REPO = Path(__file__).resolve().parents[2]

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# 32 events / batch 4 = 8 batches; 2 accumulated per step -> 4 optimizer steps per epoch, 8 in all
SECTIONS = {
    "training": {"epochs": 2, "grad_accum_steps": 2, "ema": {"enabled": True, "decay": 0.9}, "log_every": 1},
    "checkpoint": {"save_every_steps": 2, "auto_resume": True},
}


def _fit(tmp_path, run_name: str, interrupt_at_step: int | None = None) -> Trainer:
    """Build everything from scratch (dropout and task masks draw from the global RNG) and fit."""
    cfg = toy_config(tmp_path, run_name=run_name, **SECTIONS)
    resuming = (tmp_path / run_name / "checkpoints" / "last.pt").exists()
    x, y = toy_data(32)
    vx, vy = toy_data(8, seed=9)
    torch.manual_seed(0)
    trainer = Trainer(cfg, ToyModel(dropout=0.2), ToyTask(interrupt_at_step=interrupt_at_step),
                      ToyLoader(x, y, 4), ToyLoader(vx, vy, 4, shuffle=False),
                      prepare_run_dir(cfg, CPU, resuming), CPU)
    trainer.fit()
    return trainer


def _history(tmp_path, run_name: str) -> list[dict]:
    records = json.loads((tmp_path / run_name / "training_history.json").read_text())
    return [{k: v for k, v in record.items() if k != "time_s"} for record in records]


@pytest.mark.parametrize("interrupt_at_step, resumed_at", [(4, (1, 0)), (7, (1, 4))],
                         ids=["epoch-boundary", "mid-epoch"])
def test_resume_is_bit_for_bit(tmp_path, interrupt_at_step, resumed_at):
    straight = _fit(tmp_path, "straight")

    with pytest.raises(Interrupted):
        _fit(tmp_path, "resumed", interrupt_at_step=interrupt_at_step)
    last = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"]) == resumed_at
    resumed = _fit(tmp_path, "resumed")

    for (name, expected), actual in zip(straight.raw_model.state_dict().items(),
                                        resumed.raw_model.state_dict().values()):
        assert torch.equal(expected, actual), name
    for (name, expected), actual in zip(straight.ema.module.state_dict().items(),
                                        resumed.ema.module.state_dict().values()):
        assert torch.equal(expected, actual), f"ema {name}"
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"]
    assert _history(tmp_path, "resumed") == _history(tmp_path, "straight")


def test_the_run_directorys_own_last_pt_wins_over_resume_from(tmp_path):
    """resume_from seeds a run only at its start: a requeued run continues from its own last.pt."""
    seed_cfg = toy_config(tmp_path, run_name="seed", training={"epochs": 1})
    Trainer(seed_cfg, ToyModel(), ToyTask(), ToyLoader(*toy_data(32), 4), None,
            prepare_run_dir(seed_cfg, CPU, False), CPU).fit()
    seed = tmp_path / "seed" / "checkpoints" / "last.pt"
    cfg = toy_config(tmp_path, run_name="seeded", training={"epochs": 2},
                     checkpoint={"resume_from": str(seed), "save_every_steps": 1})

    def trainer(task: ToyTask) -> Trainer:
        return Trainer(cfg, ToyModel(), task, ToyLoader(*toy_data(32), 4), None, prepare_run_dir(cfg, CPU, True), CPU)

    with pytest.raises(Interrupted):
        trainer(ToyTask(interrupt_at_step=11)).fit()  # seeded at step 8, killed in step 12
    requeued = trainer(ToyTask())
    own_last = tmp_path / "seeded" / "checkpoints" / "last.pt"
    assert requeued.checkpoints.resume_path == own_last and requeued.state.global_step == 11
    assert requeued.checkpoints.seeded_from is None
    assert requeued.fit()["global_step"] == 16
    assert load_checkpoint(seed)["global_step"] == 8  # the seed is never written


@pytest.mark.parametrize("kill_before", [["best.pt", 2], ["export", 2]], ids=["before-best.pt", "before-export"])
def test_a_kill_between_last_pt_and_the_best_is_repaired_on_resume(tmp_path, kill_before):
    """SIGKILL after last.pt recorded epoch 2 as the best, before best.pt (or the export of the best) followed."""
    options = {"sections": {"training": {"epochs": 3}, "checkpoint": {"auto_resume": True}},
               "val_losses": [3.0, 1.0, 2.0], "kill_before": kill_before}  # epoch 2 is the best
    killed = subprocess.run([sys.executable, str(REPO / "tests/engine/toy_run.py"), str(tmp_path), json.dumps(options)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = tmp_path / "toy" / "checkpoints"
    assert load_checkpoint(checkpoints / "last.pt")["best_epoch"] == 2
    stale_file = checkpoints / "best.pt" if kill_before[0] == "best.pt" else tmp_path / "toy" / "toy_best.pt"
    assert stale_file.is_file()  # from epoch 1

    del options["kill_before"]
    trainer = toy_trainer(tmp_path, options)
    result = trainer.fit()
    assert (result["best_epoch"], result["epochs_completed"]) == (2, 3)
    best = load_checkpoint(checkpoints / "best.pt")
    assert (best["epoch"], best["global_step"]) == (2, 16)
    exported = torch.load(tmp_path / "toy" / "toy_best.pt", weights_only=True)
    assert all(torch.equal(exported[name], value) for name, value in best["model"].items())
