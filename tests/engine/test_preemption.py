"""A preemption signal (or Ctrl-C) makes the trainer write last.pt and stop; resuming from it loses nothing."""
from __future__ import annotations

import json
import os
import signal

import pytest
import torch

from lib.engine import Trainer, load_checkpoint, prepare_run_dir
from lib.engine.distributed import DistInfo
from lib.engine.preemption import Preempted
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
SECTIONS = {"training": {"epochs": 2, "log_every": 1}, "checkpoint": {"auto_resume": True}}


class SignallingTask(ToyTask):
    """Sends `signum` to this process during the training step `at_step` (as SLURM would), or during the
    `at_validation`-th validation batch of this process."""

    def __init__(self, at_step: int | None, signum: int, at_validation: int | None = None) -> None:
        super().__init__()
        self.at_step, self.signum, self.at_validation = at_step, signum, at_validation
        self.validation_batches = 0

    def training_step(self, model, batch, step):
        if step == self.at_step:
            os.kill(os.getpid(), self.signum)
        return super().training_step(model, batch, step)

    def validation_step(self, model, batch):
        self.validation_batches += 1
        if self.validation_batches == self.at_validation:
            os.kill(os.getpid(), self.signum)
        return super().validation_step(model, batch)


def _fit(tmp_path, run_name: str, at_step: int | None = None, signum: int = signal.SIGUSR1,
         at_validation: int | None = None) -> Trainer:
    cfg = toy_config(tmp_path, run_name=run_name, **SECTIONS)
    resuming = (tmp_path / run_name / "checkpoints" / "last.pt").exists()
    x, y = toy_data(32)
    vx, vy = toy_data(8, seed=9)
    torch.manual_seed(0)
    trainer = Trainer(cfg, ToyModel(), SignallingTask(at_step, signum, at_validation), ToyLoader(x, y, 4),
                      ToyLoader(vx, vy, 4, shuffle=False), prepare_run_dir(cfg, CPU, resuming), CPU)
    trainer.fit()
    return trainer


def _history(tmp_path, run_name: str) -> list[dict]:
    records = json.loads((tmp_path / run_name / "training_history.json").read_text())
    return [{k: v for k, v in record.items() if k != "time_s"} for record in records]


@pytest.fixture(autouse=True)
def _restore_signal_handlers():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.parametrize("signum", [signal.SIGUSR1, signal.SIGTERM, signal.SIGINT],
                         ids=["SIGUSR1", "SIGTERM", "SIGINT"])
def test_signal_checkpoints_after_the_current_step_and_resume_is_exact(tmp_path, signum):
    straight = _fit(tmp_path, "straight")

    with pytest.raises(Preempted, match="preempted at global step 3"):
        _fit(tmp_path, "preempted", at_step=2, signum=signum)
    last = load_checkpoint(tmp_path / "preempted" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["global_step"]) == (0, 3, 3)

    resumed = _fit(tmp_path, "preempted")
    assert resumed.state.global_step == straight.state.global_step == 16
    for (name, expected), actual in zip(straight.raw_model.state_dict().items(),
                                        resumed.raw_model.state_dict().values()):
        assert torch.equal(expected, actual), name


def test_signal_on_the_last_step_of_an_epoch_resumes_exactly(tmp_path):
    straight = _fit(tmp_path, "straight")

    with pytest.raises(Preempted, match="preempted at global step 8"):
        _fit(tmp_path, "preempted", at_step=7)  # 8 steps per epoch: the checkpoint holds a trained, unvalidated epoch
    last = load_checkpoint(tmp_path / "preempted" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["global_step"]) == (0, 8, 8)

    resumed = _fit(tmp_path, "preempted")
    for (name, expected), actual in zip(straight.raw_model.state_dict().items(),
                                        resumed.raw_model.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert _history(tmp_path, "preempted") == _history(tmp_path, "straight")


def test_a_signal_during_validation_keeps_the_trained_epoch_and_validates_it_on_resume(tmp_path):
    straight = _fit(tmp_path, "straight")

    with pytest.raises(Preempted, match="during the validation of epoch 1"):
        _fit(tmp_path, "preempted", at_validation=1)  # 8 steps of epoch 1 trained, then its first val batch
    last = load_checkpoint(tmp_path / "preempted" / "checkpoints" / "last.pt")
    assert (last["epoch"], last["batch_in_epoch"], last["global_step"]) == (0, 8, 8)
    assert not (tmp_path / "preempted" / "training_history.json").exists()

    resumed = _fit(tmp_path, "preempted")
    for (name, expected), actual in zip(straight.raw_model.state_dict().items(),
                                        resumed.raw_model.state_dict().values()):
        assert torch.equal(expected, actual), name
    assert _history(tmp_path, "preempted") == _history(tmp_path, "straight")


def test_signal_handlers_are_given_back_when_fit_returns(tmp_path):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    _fit(tmp_path, "run")
    assert {sig: signal.getsignal(sig) for sig in before} == before
