"""checkpoint.{reset_epoch, refresh_lr, new_mlflow_run}: what a run seeded from another run's checkpoint takes from
it, and that a requeue continues its own last.pt exactly, without applying them again (CPU, toy model)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lib.engine import CheckpointError, CheckpointManager, Trainer, load_checkpoint, prepare_run_dir
from lib.engine.distributed import DistInfo
from lib.engine.tracking import PARENT_CHECKPOINT_TAG, PARENT_RUN_TAG
from tests.engine.ddp_worker import Interrupted, ToyLoader, ToyModel, ToyTask, toy_config, toy_data
from tests.engine.test_tracking import _client, _sqlite_store, store_template  # noqa: F401  (a fixture)

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
STEPS_PER_EPOCH = 8  # 32 events in batches of 4
SEED_SECTIONS = {"training": {"epochs": 1, "ema": {"enabled": True, "decay": 0.9},
                              "early_stopping": {"enabled": True, "patience": 3}}}
CHILD_LR, CHILD_MIN_LR = 0.03, 1e-4


def _config(tmp_path: Path, run_name: str, **sections):
    merged = {name: {**SEED_SECTIONS.get(name, {}), **values} for name, values in sections.items()}
    return toy_config(tmp_path, run_name=run_name, **{**SEED_SECTIONS, **merged})


def _trainer(tmp_path: Path, run_name: str, task: ToyTask | None = None, **sections) -> Trainer:
    """The toy trainer of run `run_name` (resuming its own last.pt when it has one); the global RNG seeded first."""
    cfg = _config(tmp_path, run_name, **sections)
    resuming = (tmp_path / run_name / "checkpoints" / "last.pt").exists() or cfg.checkpoint.resume_from is not None
    torch.manual_seed(0)
    return Trainer(cfg, ToyModel(dropout=0.1), task or ToyTask(), ToyLoader(*toy_data(32), 4),
                   ToyLoader(*toy_data(8, seed=9), 4, shuffle=False), prepare_run_dir(cfg, CPU, resuming), CPU)


@pytest.fixture
def seed(tmp_path) -> Path:
    """last.pt of a finished 1-epoch run (8 optimizer steps, EMA, early stopping, a best metric)."""
    _trainer(tmp_path, "seed").fit()
    return tmp_path / "seed" / "checkpoints" / "last.pt"


def _child_sections(seed: Path, epochs: int = 3, **controls) -> dict:
    return {"training": {"epochs": epochs, "lr": CHILD_LR, "min_lr": CHILD_MIN_LR},
            "checkpoint": {"resume_from": str(seed), "save_every_steps": 2, **controls}}


def _child(tmp_path: Path, seed: Path, run_name: str = "child", task: ToyTask | None = None, epochs: int = 3,
           **controls) -> Trainer:
    return _trainer(tmp_path, run_name, task, **_child_sections(seed, epochs, **controls))


def _same(state: dict, expected: dict) -> bool:
    return all(torch.equal(state[name], value) for name, value in expected.items())


@pytest.mark.parametrize("controls", [{}, {"refresh_lr": True}, {"reset_epoch": True}],
                         ids=["default", "refresh_lr", "reset_epoch"])
def test_what_a_seeded_run_takes_from_its_seed(tmp_path, seed, controls):
    saved = load_checkpoint(seed)
    child = _child(tmp_path, seed, **controls)
    fresh_schedule, reset = bool(controls), "reset_epoch" in controls

    assert child.checkpoints.seeded_from == seed and child.checkpoints.seed_controls is not None
    assert _same(child.raw_model.state_dict(), saved["model"])  # weights, EMA and optimizer moments: always
    assert _same(child.ema.module.state_dict(), saved["ema"]["module"])
    moments = [state["exp_avg"] for state in child.optimizer.state_dict()["state"].values()]
    assert all(torch.equal(m, s["exp_avg"]) for m, s in zip(moments, saved["optimizer"]["state"].values()))
    group, saved_group = child.optimizer.param_groups[0], saved["optimizer"]["param_groups"][0]
    assert group["initial_lr"] == (CHILD_LR if fresh_schedule else saved_group["initial_lr"])
    assert child.scheduler.last_epoch == (0 if fresh_schedule else saved["scheduler"]["last_epoch"])
    assert child.checkpoints.schedule_start_step == (STEPS_PER_EPOCH if controls == {"refresh_lr": True} else 0)
    state = child.state
    assert (state.epoch, state.global_step) == ((0, 0) if reset else (1, STEPS_PER_EPOCH))
    assert state.best_metric == (None if reset else saved["best_metric"]) and saved["best_metric"] is not None
    assert child.early_stopping.best == (math.inf if reset else saved["early_stopping"]["best"])
    assert state.mlflow_run_id is None  # a new MLflow run (checkpoint.new_mlflow_run defaults to true)


def test_refresh_lr_runs_a_new_schedule_from_the_seeds_step_to_the_end(tmp_path, seed):
    child = _child(tmp_path, seed, refresh_lr=True)
    warmup_steps = round(0.5 * STEPS_PER_EPOCH)  # toy_config's warmup_epochs
    assert child.optimizer.param_groups[0]["lr"] == pytest.approx(CHILD_LR / warmup_steps)  # warm-up starts again
    result = child.fit()
    assert result["global_step"] == 3 * STEPS_PER_EPOCH
    assert child.optimizer.param_groups[0]["lr"] == pytest.approx(CHILD_MIN_LR)  # and ends with training.epochs


@pytest.mark.parametrize("controls", [{"reset_epoch": True}, {"refresh_lr": True}], ids=["reset_epoch", "refresh_lr"])
def test_a_requeued_seeded_run_continues_its_own_last_pt_exactly(tmp_path, seed, controls):
    straight = _child(tmp_path, seed, "straight", epochs=2, **controls)
    straight.fit()
    first_step = 0 if "reset_epoch" in controls else STEPS_PER_EPOCH
    with pytest.raises(Interrupted):  # killed in its 6th step, after last.pt of its 4th
        _child(tmp_path, seed, "requeued", ToyTask(interrupt_at_step=first_step + 5), epochs=2, **controls).fit()

    requeued = _child(tmp_path, seed, "requeued", epochs=2, **controls)
    assert requeued.checkpoints.resume_path == tmp_path / "requeued" / "checkpoints" / "last.pt"
    assert requeued.checkpoints.seed_controls is None and requeued.checkpoints.mlflow_tags == {}
    assert requeued.state.global_step == first_step + 4 and requeued.scheduler.last_epoch == 4
    requeued.fit()
    assert _same(requeued.raw_model.state_dict(), straight.raw_model.state_dict())
    assert _same(requeued.ema.module.state_dict(), straight.ema.module.state_dict())
    assert requeued.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    assert requeued.state == straight.state


def test_controls_that_cannot_apply_are_refused(tmp_path, seed):
    def manager(run_name: str, **sections) -> CheckpointManager:
        return CheckpointManager(_config(tmp_path, run_name, **sections), tmp_path / run_name, CPU)

    with pytest.raises(CheckpointError, match="has none"):
        manager("alone", checkpoint={"reset_epoch": True})
    own_last = tmp_path / "seed" / "checkpoints" / "last.pt"
    with pytest.raises(CheckpointError, match="own checkpoints/"):
        manager("seed", checkpoint={"resume_from": str(own_last), "refresh_lr": True})
    with pytest.raises(CheckpointError, match="no step is left"):
        manager("child", **_child_sections(seed, epochs=1, refresh_lr=True))
    with pytest.raises(CheckpointError, match="keep checkpoint.new_mlflow_run"):
        manager("child", **_child_sections(seed, reset_epoch=True, new_mlflow_run=False))
    assert manager("child", **_child_sections(seed, reset_epoch=True)).seed_controls is not None


def test_mlflow_runs_and_tags_of_seeded_runs(tmp_path, store_template):  # noqa: F811
    uri = _sqlite_store(tmp_path, store_template)
    tracking = {"mlflow": {"enabled": True, "tracking_uri": uri}}
    parent_result = _trainer(tmp_path, "seed", **tracking).fit()
    seed, parent = tmp_path / "seed" / "checkpoints" / "last.pt", parent_result["mlflow_run_id"]

    new_run = _trainer(tmp_path, "new", training={"epochs": 2},
                       checkpoint={"resume_from": str(seed), "reset_epoch": True}, **tracking).fit()
    tags = _client(uri).get_run(new_run["mlflow_run_id"]).data.tags
    assert new_run["mlflow_run_id"] != parent and tags[PARENT_RUN_TAG] == parent
    assert tags[PARENT_CHECKPOINT_TAG] == str(seed.resolve())
    assert {k: tags[k] for k in ("checkpoint.reset_epoch", "checkpoint.refresh_lr", "checkpoint.new_mlflow_run")} == {
        "checkpoint.reset_epoch": "true", "checkpoint.refresh_lr": "false", "checkpoint.new_mlflow_run": "true"}

    continued = _trainer(tmp_path, "continued", training={"epochs": 2},
                         checkpoint={"resume_from": str(seed), "refresh_lr": True, "new_mlflow_run": False},
                         **tracking).fit()
    assert continued["mlflow_run_id"] == parent
    run = _client(uri).get_run(parent)
    assert run.data.tags["checkpoint.new_mlflow_run"] == "false" and PARENT_RUN_TAG not in run.data.tags
    steps = [m.step for m in _client(uri).get_metric_history(parent, "step/loss")]
    assert steps == sorted(steps) and max(steps) == 2 * STEPS_PER_EPOCH  # the seed's steps, then the child's
