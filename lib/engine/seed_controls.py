"""What a run seeded from checkpoint.resume_from takes from its seed (checkpoint.reset_epoch, refresh_lr,
new_mlflow_run).

A seed is a checkpoint of another run directory that starts this run (`CheckpointManager.seeded_from`).
Without controls the run continues the seed's training exactly, in a new MLflow run tagged with its parent.
The controls change what is taken from the seed, once, when the run starts from it:

    part                                      default          refresh_lr                 reset_epoch
    weights, EMA, grad scaler                 seed             seed                       seed
    optimizer moments (Adam averages, ...)    seed             seed                       seed
    optimizer settings (lr, weight decay)     seed             this config                this config
    learning-rate schedule                    seed's position  new: seed's step -> end    new: step 0 -> end
    epoch, global step                        seed             seed                       0
    early stopping, best metric               seed             seed                       fresh
    per-rank RNG, data position               seed             seed                       fresh

new_mlflow_run (default true) gives the run a new MLflow run tagged with its parent; false continues the
seed's MLflow run (refused with reset_epoch, whose steps that run already holds). A requeued run continues
its own last.pt, which holds the state after the controls were applied: they are never applied again. The
controls are written as tags of the run's MLflow run (`checkpoint.<control>`) and are in its resolved config.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lib.engine.checkpoint import CheckpointError

log = logging.getLogger(__name__)

OPTIMIZER, SCHEDULER, EARLY_STOPPING = "optimizer", "scheduler", "early_stopping"
"""Names of the shared parts the controls treat specially (the trainer attaches them under these names)."""
SCHEDULE_START = "schedule_start_step"
"""Train-state field: the global step at which the run's learning-rate schedule began."""
_RESET_TRAIN_STATE = {"epoch": 0, "batch_in_epoch": 0, "global_step": 0, "best_metric": None, "best_epoch": None,
                      SCHEDULE_START: 0}
_SETTINGS = ("reset_epoch", "refresh_lr", "new_mlflow_run")


@dataclass(frozen=True)
class SeedControls:
    """The checkpoint section's reset_epoch, refresh_lr and new_mlflow_run."""

    reset_epoch: bool = False
    refresh_lr: bool = False
    new_mlflow_run: bool = True

    @classmethod
    def of(cls, checkpoint_cfg: Any) -> SeedControls:
        """The controls of a config's checkpoint section."""
        return cls(**{name: getattr(checkpoint_cfg, name) for name in _SETTINGS})

    @property
    def fresh_schedule(self) -> bool:
        """Whether the seeded run starts a new learning-rate schedule (with the optimizer settings of the config)."""
        return self.reset_epoch or self.refresh_lr

    @property
    def changed(self) -> list[str]:
        """The controls set away from their defaults, as config keys."""
        return [f"checkpoint.{name}" for name in _SETTINGS if getattr(self, name) != getattr(SeedControls, name)]

    def tags(self) -> dict[str, str]:
        """MLflow tags of a seeded run: every control with its value."""
        return {f"checkpoint.{name}": str(getattr(self, name)).lower() for name in _SETTINGS}

    def check(self, resume_from: str | None, seed_in_run_dir: bool) -> None:
        """Refuse (CheckpointError) controls that cannot apply: set without a seed, a seed in this run's own
        checkpoints/ (which a requeue continues exactly), or reset_epoch into the seed's MLflow run."""
        if not self.changed:
            return
        keys = ", ".join(self.changed)
        if resume_from is None:
            raise CheckpointError(f"{keys} apply to a run that starts from checkpoint.resume_from, and this run has "
                                  "none; set checkpoint.resume_from to the checkpoint to continue, or remove them")
        if seed_in_run_dir:
            raise CheckpointError(f"{keys} apply to a run seeded from another run directory's checkpoint, but "
                                  f"checkpoint.resume_from={resume_from} lies in this run's own checkpoints/, which "
                                  "a requeue continues exactly; give a new checkpoint.run_name")
        if self.reset_epoch and not self.new_mlflow_run:
            raise CheckpointError("checkpoint.reset_epoch restarts the step count, at whose steps the seed's MLflow "
                                  "run already holds metrics; keep checkpoint.new_mlflow_run: true")

    def apply(self, saved: dict[str, Any], rank_state: dict[str, Any], path: Path, epochs: int) -> dict[str, Any]:
        """Edit the seed's loaded shared state `saved` (in place) as the controls say; returns the per-rank state
        to restore (empty with reset_epoch). `epochs`: training.epochs of this run."""
        if self.refresh_lr and not self.reset_epoch and saved["epoch"] >= epochs:
            raise CheckpointError(f"checkpoint.refresh_lr: the seed {path} has completed {saved['epoch']} epochs and "
                                  f"training.epochs is {epochs}, so no step is left for a new schedule; raise "
                                  "training.epochs (or use checkpoint.reset_epoch to count from 0)")
        if self.fresh_schedule:
            saved.pop(SCHEDULER, None)
            saved[SCHEDULE_START] = saved["global_step"]
        if self.reset_epoch:
            saved.pop(EARLY_STOPPING, None)
            saved.update(_RESET_TRAIN_STATE)
            rank_state = {}
        if self.changed:
            log.info("seeded from %s with %s: %s", path, ", ".join(self.changed), self.describe(saved))
        return rank_state

    def describe(self, saved: dict[str, Any]) -> str:
        """One line: what the seeded run takes from its seed."""
        kept = "weights, EMA, optimizer moments" + ("" if self.fresh_schedule else ", optimizer settings, schedule")
        fresh = ["epoch 0", "early stopping", "best metric", "RNG and data position"] if self.reset_epoch else []
        if self.fresh_schedule:
            fresh.insert(0, f"a new lr schedule from global step {saved[SCHEDULE_START]} with this config's optimizer "
                            "settings")
        return f"kept {kept}; " + (f"new: {', '.join(fresh)}" if fresh else "nothing else new")

    def part_state(self, name: str, part: Any, state: Any) -> Any:
        """The seed's `state` of the shared part `name`, as it is to be restored: with a fresh schedule the
        optimizer keeps its moments but takes its settings (lr, weight decay, betas, ...) from this config."""
        if name != OPTIMIZER or not self.fresh_schedule or not state:
            return state
        fresh_groups = part.state_dict()["param_groups"]
        if len(fresh_groups) != len(state["param_groups"]):
            raise CheckpointError(f"the seed's optimizer has {len(state['param_groups'])} parameter groups, this run's "
                                  f"{len(fresh_groups)}; the model's trainable parameters differ")
        groups = [{**fresh, "params": seeded["params"]} for fresh, seeded in zip(fresh_groups, state["param_groups"])]
        return {**state, "param_groups": groups}
