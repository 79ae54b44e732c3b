"""Checkpoint files, run directories, early stopping and the non-finite-loss stop."""
from __future__ import annotations

import json
import logging
import os

import pytest
import torch

from lib.config import ModelConfig, to_dict
from lib.engine import (
    CheckpointError, EarlyStopping, NonFiniteError, RunDirError, Trainer, evaluation_weights, load_checkpoint,
)
from lib.engine.checkpoint import prune_epoch_checkpoints, save_checkpoint
from lib.engine.distributed import DistInfo
from lib.engine.rundir import prepare_run_dir
from tests.engine.ddp_worker import Interrupted, ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _trainer(cfg, task=None, n_train=16, n_val=8, resuming=False):
    x, y = toy_data(n_train)
    vx, vy = toy_data(n_val, seed=5)
    torch.manual_seed(0)
    return Trainer(cfg, ToyModel(), task or ToyTask(), ToyLoader(x, y, cfg.data.batch_size),
                   ToyLoader(vx, vy, cfg.data.batch_size, shuffle=False), prepare_run_dir(cfg, CPU, resuming), CPU)


def test_atomic_write_leaves_no_tmp_and_keeps_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    assert os.listdir(tmp_path) == ["last.pt"]

    def broken_save(obj, f):
        open(f, "wb").write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["last.pt"] and load_checkpoint(path)["step"] == 1


def test_prune_keeps_newest_epoch_checkpoints(tmp_path):
    for epoch in [1, 2, 3, 10]:
        (tmp_path / f"epoch_{epoch:04d}.pt").write_bytes(b"x")
    (tmp_path / "best.pt").write_bytes(b"x")
    prune_epoch_checkpoints(tmp_path, keep_last_n=2)
    assert sorted(os.listdir(tmp_path)) == ["best.pt", "epoch_0003.pt", "epoch_0010.pt"]


def test_load_checkpoint_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError, match="not a readable torch file"):
        load_checkpoint(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="not an xecmae checkpoint"):
        load_checkpoint(foreign)


def test_run_keeps_last_n_epoch_checkpoints_and_writes_history(tmp_path):
    cfg = toy_config(tmp_path, training={"epochs": 4}, checkpoint={"keep_last_n": 2})
    task = ToyTask()
    result = _trainer(cfg, task).fit()
    run_dir = tmp_path / "toy"
    names = sorted(os.listdir(run_dir / "checkpoints"))
    assert names == ["best.pt", "epoch_0003.pt", "epoch_0004.pt", "last.pt"]
    history = json.loads((run_dir / "training_history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]
    best = min(history, key=lambda r: r["val/loss"])
    assert result["best_metric"] == best["val/loss"] and result["best_epoch"] == best["epoch"]
    assert load_checkpoint(run_dir / "checkpoints" / "best.pt")["epoch"] == best["epoch"]
    assert task.exports[-1] == "last" and (run_dir / "toy_best.pt").is_file()
    assert (run_dir / "config.yaml").is_file() and "epoch 4/4 done" in (run_dir / "train.log").read_text()


def test_existing_run_dir_is_refused_without_resume_and_left_untouched(tmp_path):
    cfg = toy_config(tmp_path)
    run_dir = prepare_run_dir(cfg, CPU, resuming=False)
    (run_dir / "config.yaml").write_text("original")
    with pytest.raises(RunDirError, match="already exists"):
        prepare_run_dir(cfg, CPU, resuming=False)
    assert (run_dir / "config.yaml").read_text() == "original"


def test_resume_refuses_a_different_model_config(tmp_path):
    _trainer(toy_config(tmp_path, training={"epochs": 1})).fit()
    last = tmp_path / "toy" / "checkpoints" / "last.pt"
    default = ModelConfig().decoder_dim
    changed = toy_config(tmp_path, model={"decoder_dim": 2 * default}, checkpoint={"resume_from": str(last)})
    with pytest.raises(CheckpointError, match=rf"model\.decoder_dim: {default} -> {2 * default}"):
        _trainer(changed, resuming=True)


def test_early_stopping_triggers_after_patience_and_survives_a_checkpoint(tmp_path):
    es_cfg = toy_config(tmp_path, training={"early_stopping": {
        "enabled": True, "patience": 2, "min_delta": 0.1, "start_ratio": 0.5}}).training.early_stopping
    stopper = EarlyStopping(es_cfg, epochs=10)  # may trigger from epoch 5 on
    decisions = [stopper.update(value, epoch) for epoch, value in enumerate([1.0, 0.95, 0.94], start=1)]
    assert decisions == [False, False, False]  # 2 epochs within min_delta, but before the start epoch
    save_checkpoint({"early_stopping": stopper.state_dict()}, tmp_path / "es.pt")
    restored = EarlyStopping(es_cfg, epochs=10)
    restored.load_state_dict(load_checkpoint(tmp_path / "es.pt")["early_stopping"])
    assert restored.update(0.99, epoch=5) is True
    assert EarlyStopping(es_cfg, epochs=10).update(0.99, epoch=5) is False


def test_trainer_stops_early_and_checkpoints_the_counter(tmp_path):
    cfg = toy_config(tmp_path, training={"epochs": 10, "early_stopping": {"enabled": True, "patience": 2}})
    result = _trainer(cfg, ToyTask(constant_val_loss=1.0)).fit()
    assert result["stopped_early"] and result["epochs_completed"] == 3 and result["best_epoch"] == 1
    state = load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")["early_stopping"]
    assert state == {"best": 1.0, "bad_epochs": 2}


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = toy_config(tmp_path, training={"epochs": 3})
    trainer = _trainer(cfg, ToyTask(nan_at_step=6))  # 4 steps per epoch: NaN in epoch 2
    with pytest.raises(NonFiniteError, match="epoch 2, global step 7"):
        trainer.fit()
    last = load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in last["model"].values())
    assert sorted(os.listdir(tmp_path / "toy" / "checkpoints")) == ["best.pt", "epoch_0001.pt", "last.pt"]


@pytest.mark.parametrize("ema", [True, False], ids=["ema", "no-ema"])
def test_evaluation_weights_are_the_ema_when_the_run_kept_one(tmp_path, ema):
    cfg = toy_config(tmp_path, training={"epochs": 1, "ema": {"enabled": ema, "decay": 0.5}})
    trainer = _trainer(cfg)
    trainer.fit()
    config, weights = evaluation_weights(tmp_path / "toy" / "checkpoints" / "last.pt")
    expected = (trainer.ema.module if ema else trainer.raw_model).state_dict()
    assert config == to_dict(cfg) and weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert ema == any(not torch.equal(weights[k], trainer.raw_model.state_dict()[k]) for k in expected)


def test_an_ema_enabled_on_resume_starts_from_the_resumed_weights(tmp_path):
    _trainer(toy_config(tmp_path, training={"epochs": 1})).fit()
    resumed = _trainer(toy_config(tmp_path, training={"epochs": 2, "ema": {"enabled": True}},
                                  checkpoint={"auto_resume": True}), resuming=True)
    saved = load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in resumed.ema.module.state_dict().items())


def test_a_checkpoint_of_another_world_size_restarts_its_epoch(tmp_path, caplog):
    cfg = toy_config(tmp_path, training={"epochs": 1}, checkpoint={"save_every_steps": 1, "auto_resume": True})
    with pytest.raises(Interrupted):
        _trainer(cfg, ToyTask(interrupt_at_step=2)).fit()
    last = tmp_path / "toy" / "checkpoints" / "last.pt"
    state = load_checkpoint(last)
    save_checkpoint({**state, "rank_states": state["rank_states"] * 2}, last)  # as if written by two ranks
    with caplog.at_level(logging.INFO):
        trainer = _trainer(cfg, resuming=True)
    assert "written by 2 ranks, this run has 1" in caplog.text and "epoch 1 restarts from its first batch" in caplog.text
    assert (trainer.state.epoch, trainer.state.batch_in_epoch, trainer.state.global_step) == (0, 0, 2)
    assert trainer.fit()["global_step"] == 2 + 4


def test_leftovers_of_interrupted_writes_are_removed_when_a_run_starts(tmp_path, caplog):
    cfg = toy_config(tmp_path, training={"epochs": 1}, checkpoint={"auto_resume": True})
    _trainer(cfg).fit()
    run_dir = tmp_path / "toy"
    leftovers = [run_dir / "checkpoints" / ".last.pt.k3j2h1.tmp", run_dir / ".training_history.json.a8d7f6.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")  # what kill -9 during an atomic write leaves
    with caplog.at_level(logging.INFO, logger="lib.engine.rundir"):
        prepare_run_dir(cfg, CPU, resuming=True)
    assert not any(path.exists() for path in leftovers)
    assert all(f"removed {path}" in caplog.text for path in leftovers)
