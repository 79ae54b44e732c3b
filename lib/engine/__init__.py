"""The training engine shared by MAE pretraining and regression (see lib.engine.trainer.Trainer)."""
from __future__ import annotations

from lib.engine.checkpoint import CheckpointError, evaluation_weights, load_checkpoint
from lib.engine.checkpoint_manager import CheckpointManager
from lib.engine.distributed import (
    DistInfo, DistributedSetupError, broadcast_object, cleanup, init_distributed, reduce_metrics,
)
from lib.engine.finite import NonFiniteError
from lib.engine.rng import seed_everything
from lib.engine.rundir import RunDirError, prepare_run_dir, run_dir_path
from lib.engine.task import StepOutput, Task
from lib.engine.train_state import EarlyStopping, TrainState
from lib.engine.trainer import Trainer

__all__ = [
    "CheckpointError", "CheckpointManager", "DistInfo", "DistributedSetupError", "EarlyStopping",
    "NonFiniteError", "RunDirError", "StepOutput", "Task", "TrainState", "Trainer", "broadcast_object",
    "cleanup", "evaluation_weights", "init_distributed", "load_checkpoint",
    "prepare_run_dir", "reduce_metrics", "run_dir_path", "seed_everything",
]
