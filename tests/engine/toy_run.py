"""A toy training run in a process of its own, for the tests that kill one with SIGKILL at a chosen point.

    python tests/engine/toy_run.py SAVE_DIR OPTIONS_JSON

OPTIONS_JSON holds "sections" (config sections over toy_config's; the run is SAVE_DIR/toy), optionally
"val_losses" (the validation loss of each epoch, in order: fixes which epoch is the best) and at most one
kill point: "kill_at_step": k (SIGKILL in training step k, once MLflow holds the step metrics of step k - 1,
beyond the last checkpoint) or "kill_before": [what, n] (SIGKILL just before the n-th write of best.pt,
what = "best.pt", or the n-th export of the best weights, what = "export"). The tests resume such a run
in their own process with `toy_trainer(SAVE_DIR, options)`.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch

if __name__ == "__main__":  # run as a script: make `lib` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import lib.engine.checkpoint_manager as checkpoint_manager
from lib.engine import Trainer, prepare_run_dir
from lib.engine.distributed import DistInfo
from lib.io.run_files import MLFLOW_RUN_ID_NAME
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
RUN_NAME = "toy"


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_logged_step(run_dir: Path, tracking_uri: str, step: int, timeout_s: float = 60.0) -> None:
    """Wait until the run's MLflow run holds step/loss at `step`."""
    from mlflow.tracking import MlflowClient

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        id_file = run_dir / MLFLOW_RUN_ID_NAME
        if id_file.is_file():
            history = MlflowClient(tracking_uri).get_metric_history(id_file.read_text().strip(), "step/loss")
            if any(metric.step == step for metric in history):
                return
        time.sleep(0.1)
    raise TimeoutError(f"MLflow never received step/loss at step {step}")


class ToyRunTask(ToyTask):
    """ToyTask with fixed validation losses per epoch and the kill points of the module docstring."""

    def __init__(self, run_dir: Path, options: dict[str, Any], tracking_uri: str | None) -> None:
        super().__init__()
        self.run_dir, self.options, self.tracking_uri = run_dir, options, tracking_uri
        self.state: Any = None  # the trainer's TrainState, set once the trainer exists
        self.best_exports = 0

    def training_step(self, model, batch, step):
        if step == self.options.get("kill_at_step"):
            _wait_for_logged_step(self.run_dir, self.tracking_uri, step)  # step is 0-based: global step `step` is done
            _kill_self()
        return super().training_step(model, batch, step)

    def validation_step(self, model, batch):
        output = super().validation_step(model, batch)
        losses = self.options.get("val_losses")
        return output._replace(loss=output.loss * 0 + losses[self.state.epoch]) if losses else output

    def export(self, model, run_dir, tag):
        if tag == "best":
            self.best_exports += 1
            if self.options.get("kill_before") == ["export", self.best_exports]:
                _kill_self()
        super().export(model, run_dir, tag)


def _kill_before_the_nth_best_write(n: int) -> None:
    original, writes = checkpoint_manager.copy_checkpoint, []

    def copy(src: Path, dst: Path) -> None:
        if dst.name == "best.pt":
            writes.append(dst)
            if len(writes) == n:
                _kill_self()
        original(src, dst)

    checkpoint_manager.copy_checkpoint = copy


def toy_trainer(save_dir: Path, options: dict[str, Any]) -> Trainer:
    """The toy run's trainer (resuming when SAVE_DIR/toy holds a last.pt): 32 events in batches of 4."""
    cfg = toy_config(save_dir, run_name=RUN_NAME, **options.get("sections", {}))
    run_dir = Path(save_dir) / RUN_NAME
    resuming = (run_dir / "checkpoints" / "last.pt").exists()
    tracking_uri = cfg.mlflow.resolve_tracking_uri(save_dir) if cfg.mlflow.enabled else None
    task = ToyRunTask(run_dir, options, tracking_uri)
    x, y = toy_data(32)
    vx, vy = toy_data(8, seed=9)
    torch.manual_seed(0)
    trainer = Trainer(cfg, ToyModel(), task, ToyLoader(x, y, 4), ToyLoader(vx, vy, 4, shuffle=False),
                      prepare_run_dir(cfg, CPU, resuming), CPU)
    task.state = trainer.state
    return trainer


if __name__ == "__main__":
    run_options = json.loads(sys.argv[2])
    if run_options.get("kill_before", [None])[0] == "best.pt":
        _kill_before_the_nth_best_write(run_options["kill_before"][1])
    toy_trainer(Path(sys.argv[1]), run_options).fit()
