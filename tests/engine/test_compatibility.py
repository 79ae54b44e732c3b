"""Resume compatibility: every setting that defines what the weights mean must match the checkpoint's."""
from __future__ import annotations

import json

import pytest
import torch

from lib.config import MAEConfig, to_dict
from lib.engine import CheckpointError, CheckpointManager, Trainer, prepare_run_dir
from lib.engine.checkpoint import check_resume_compatible
from lib.engine.distributed import DistInfo
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _fit(cfg, resuming: bool) -> dict:
    x, y = toy_data(16)
    vx, vy = toy_data(8, seed=5)
    torch.manual_seed(0)
    return Trainer(cfg, ToyModel(), ToyTask(), ToyLoader(x, y, cfg.data.batch_size),
                   ToyLoader(vx, vy, cfg.data.batch_size, shuffle=False), prepare_run_dir(cfg, CPU, resuming), CPU).fit()


@pytest.fixture
def last(tmp_path):
    """last.pt of a one-epoch toy run with default settings."""
    _fit(toy_config(tmp_path, training={"epochs": 1}), resuming=False)
    return tmp_path / "toy" / "checkpoints" / "last.pt"


@pytest.mark.parametrize("sections, key, saved, wanted", [
    ({"normalization": {"npho_scale": 500.0}}, "normalization.npho_scale", 1000.0, 500.0),
    ({"training": {"mask_ratio": 0.75}}, "training.mask_ratio", 0.6, 0.75),
    ({"data": {"npho_branch": "npho_raw"}}, "data.npho_branch", "npho", "npho_raw"),
    ({"data": {"time_branch": "time"}}, "data.time_branch", "relative_time", "time"),
    ({"training": {"time": {"weight": 2.0}}}, "training.time.weight", 1.0, 2.0),
], ids=["normalization", "mask-ratio", "npho-branch", "time-branch", "time-loss"])
def test_resume_with_another_weight_defining_setting_is_refused(tmp_path, last, sections, key, saved, wanted):
    changed = toy_config(tmp_path, checkpoint={"resume_from": str(last)}, **sections)
    with pytest.raises(CheckpointError) as refused:
        CheckpointManager(changed, tmp_path / "toy", CPU)
    message = str(refused.value)
    assert f"{key}: {saved!r} -> {wanted!r}" in message
    assert str(last) in message and "start a new run" in message and "checkpoint's settings" in message


def test_every_differing_key_is_named(tmp_path, last):
    changed = toy_config(tmp_path, checkpoint={"resume_from": str(last)}, training={"mask_ratio": 0.5},
                         normalization={"time_shift": 0.0}, data={"time_branch": "t"})
    with pytest.raises(CheckpointError) as refused:
        CheckpointManager(changed, tmp_path / "toy", CPU)
    for key in ("training.mask_ratio", "normalization.time_shift", "data.time_branch"):
        assert key in str(refused.value)


def test_resume_with_another_lr_and_more_epochs_is_accepted(tmp_path, last):
    changed = toy_config(tmp_path, training={"epochs": 2, "lr": 0.003}, checkpoint={"resume_from": str(last)})
    result = _fit(changed, resuming=True)
    assert result["epochs_completed"] == 2
    history = json.loads((tmp_path / "toy" / "training_history.json").read_text())
    assert [record["epoch"] for record in history] == [1, 2]


def test_the_resume_checkpoint_is_read_once(tmp_path, last, monkeypatch):
    loads = []
    original = torch.load
    monkeypatch.setattr(torch, "load", lambda *args, **kwargs: loads.append(args[0]) or original(*args, **kwargs))
    cfg = toy_config(tmp_path, training={"epochs": 2}, checkpoint={"auto_resume": True})
    checkpoints = CheckpointManager(cfg, tmp_path / "toy", CPU)
    x, y = toy_data(16)
    Trainer(cfg, ToyModel(), ToyTask(), ToyLoader(x, y, 4), None, prepare_run_dir(cfg, CPU, True), CPU,
            checkpoints).fit()
    assert loads.count(last) == 1  # (best.pt is mapped once too: resume checks that it holds the recorded best)


def test_checkpoint_config_written_before_a_key_moved_is_read_as_today(tmp_path):
    # checkpoints of the version that had training.time.npho_threshold (now normalization.npho_threshold)
    wanted = to_dict(MAEConfig())
    saved = to_dict(MAEConfig())
    saved["training"]["time"]["npho_threshold"] = saved["normalization"].pop("npho_threshold")
    checkpoint = {"schema_version": wanted["schema_version"], "config": saved}
    with pytest.warns(DeprecationWarning, match="training.time.npho_threshold"):
        check_resume_compatible(checkpoint, wanted, tmp_path / "old.pt")
    saved["training"]["time"]["npho_threshold"] = 50.0
    with pytest.raises(CheckpointError, match="normalization.npho_threshold: 50.0 -> 100.0"):
        check_resume_compatible(checkpoint, wanted, tmp_path / "old.pt")
