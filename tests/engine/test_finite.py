"""A run that goes non-finite stops without writing a checkpoint and names the newest one that is really finite."""
from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from lib.engine import NonFiniteError, Trainer, load_checkpoint, prepare_run_dir
from lib.engine.checkpoint import save_checkpoint
from lib.engine.distributed import DistInfo
from lib.engine.finite import checkpoint_is_finite
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
# 16 events in batches of 4: 4 optimizer steps per epoch


class NaNGradientTask(ToyTask):
    """A finite loss whose gradient is NaN in training step `at_step` (as from a NaN in a backward pass)."""

    def __init__(self, at_step: int) -> None:
        super().__init__()
        self.at_step = at_step

    def training_step(self, model, batch, step):
        output = super().training_step(model, batch, step)
        if step == self.at_step:
            output.loss.register_hook(lambda grad: grad * math.nan)
        return output


def _trainer(cfg, task: ToyTask, resuming: bool = False) -> Trainer:
    x, y = toy_data(16)
    vx, vy = toy_data(8, seed=5)
    torch.manual_seed(0)
    return Trainer(cfg, ToyModel(), task, ToyLoader(x, y, 4), ToyLoader(vx, vy, 4, shuffle=False),
                   prepare_run_dir(cfg, CPU, resuming), CPU)


def _named_checkpoint(message: str) -> Path:
    match = re.search(r"the last finite checkpoint is (\S+\.pt)", message)
    assert match, message
    return Path(match.group(1))


def _assert_every_checkpoint_finite(run_dir: Path) -> None:
    for path in (run_dir / "checkpoints").glob("*.pt"):
        assert checkpoint_is_finite(path), path


@pytest.mark.parametrize("grad_clip", [1.0, None], ids=["clipped", "unclipped"])
def test_a_nan_gradient_never_reaches_a_checkpoint(tmp_path, grad_clip):
    cfg = toy_config(tmp_path, training={"epochs": 3, "grad_clip": grad_clip})
    trainer = _trainer(cfg, NaNGradientTask(at_step=7))  # the last step of epoch 2
    with pytest.raises(NonFiniteError, match="global step 8") as stopped:
        trainer.fit()
    named = _named_checkpoint(str(stopped.value))
    assert named == tmp_path / "toy" / "checkpoints" / "last.pt" and load_checkpoint(named)["global_step"] == 4
    _assert_every_checkpoint_finite(tmp_path / "toy")


def test_a_nan_validation_loss_stops_the_run_before_it_is_recorded(tmp_path):
    cfg = toy_config(tmp_path, training={"epochs": 2})
    with pytest.raises(NonFiniteError, match=r"non-finite validation metric val/loss = nan after epoch 1"):
        _trainer(cfg, ToyTask(constant_val_loss=math.nan)).fit()
    last = load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["best_epoch"]) == (0, 4, None)  # trained, not validated
    assert not (tmp_path / "toy" / "checkpoints" / "best.pt").exists()
    assert not (tmp_path / "toy" / "training_history.json").exists()


def test_the_message_names_the_newest_checkpoint_verified_finite(tmp_path):
    cfg = toy_config(tmp_path, training={"epochs": 1})
    _trainer(cfg, ToyTask()).fit()
    checkpoints = tmp_path / "toy" / "checkpoints"
    poisoned = load_checkpoint(checkpoints / "last.pt")
    poisoned["model"] = {name: torch.full_like(value, math.nan) for name, value in poisoned["model"].items()}
    save_checkpoint(poisoned, checkpoints / "last.pt")  # as an older version could leave it

    resumed = toy_config(tmp_path, training={"epochs": 2}, checkpoint={"auto_resume": True})
    with pytest.raises(NonFiniteError) as stopped:
        _trainer(resumed, ToyTask(), resuming=True).fit()
    assert _named_checkpoint(str(stopped.value)) == checkpoints / "epoch_0001.pt"
