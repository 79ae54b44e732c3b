"""The training engine shared by MAE pretraining and regression (see lib.engine.trainer.Trainer)."""
from __future__ import annotations

from lib.engine.checkpoint import CheckpointError, find_resume_checkpoint, load_checkpoint, seed_everything
from lib.engine.distributed import (
    DistInfo, DistributedSetupError, broadcast_object, cleanup, init_distributed, reduce_metrics,
)
from lib.engine.rundir import RunDirError, prepare_run_dir, run_dir_path
from lib.engine.task import StepOutput, Task
from lib.engine.trainer import EarlyStopping, NonFiniteLossError, Trainer

__all__ = [
    "CheckpointError", "DistInfo", "DistributedSetupError", "EarlyStopping", "NonFiniteLossError", "RunDirError",
    "StepOutput", "Task", "Trainer", "broadcast_object", "cleanup", "find_resume_checkpoint", "init_distributed",
    "load_checkpoint", "prepare_run_dir", "reduce_metrics", "run_dir_path", "seed_everything",
]
