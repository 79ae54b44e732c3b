"""The trainer's own stateful parts: where training stands, running metric sums and early stopping.

Each has state_dict() / load_state_dict() so that the checkpoint manager saves and restores it
like the model or the optimizer.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import torch
from torch import Tensor

from lib.engine.distributed import reduce_metrics
from lib.engine.task import StepOutput


@dataclasses.dataclass
class TrainState:
    """Where training stands; its fields sit at the top of every checkpoint (tools read epoch and global_step)."""

    epoch: int = 0
    """Epochs completed."""
    batch_in_epoch: int = 0
    """Batches of epoch `epoch + 1` already trained on (non-zero in a mid-epoch checkpoint)."""
    global_step: int = 0
    """Optimizer steps taken."""
    best_metric: float | None = None
    """Best (lowest) monitored validation value so far."""
    best_epoch: int | None = None
    """Epoch (1-based) that reached best_metric; best.pt holds it."""
    mlflow_run_id: str | None = None
    """MLflow run that a resumed run continues."""
    schedule_start_step: int = 0
    """Global step at which the learning-rate schedule began: 0, or the step of the seed from which
    checkpoint.refresh_lr started a new one (lib.engine.seed_controls)."""

    def state_dict(self) -> dict[str, Any]:
        """The fields as a plain dict."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Take every field from `state` (extra keys are ignored: the checkpoint's top level is passed); a field
        that checkpoints written before it existed lack (schedule_start_step) takes its default."""
        for field in dataclasses.fields(self):
            setattr(self, field.name, state.get(field.name, field.default))


class MetricSums:
    """Sample-weighted sums of a loss and metrics over batches of one rank, reduced over all ranks at the end.

    The trainer keeps one for the training epoch in progress (saved per rank, so that an epoch
    resumed mid-way reports all its batches) and a fresh one per validation.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.sums: dict[str, Tensor] = {}
        self.n_samples = 0

    def add(self, output: StepOutput) -> None:
        """Add the loss and metrics of one batch, weighted by its sample count."""
        for name, value in {"loss": output.loss, **output.metrics}.items():
            weighted = value.detach().float() * output.n_samples
            self.sums[name] = self.sums[name] + weighted if name in self.sums else weighted
        self.n_samples += output.n_samples

    def reduce(self) -> dict[str, float]:
        """Means over every sample of every rank (collective)."""
        return reduce_metrics(self.sums, self.n_samples)

    def reset(self) -> None:
        """Start a new epoch."""
        self.sums, self.n_samples = {}, 0

    def state_dict(self) -> dict[str, Any]:
        """Sums on the CPU and the sample count."""
        return {"sums": {k: v.detach().cpu() for k, v in self.sums.items()}, "n_samples": self.n_samples}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from saved sums."""
        self.sums = {k: v.to(self.device) for k, v in state["sums"].items()}
        self.n_samples = int(state["n_samples"])


class EarlyStopping:
    """Stop after `patience` validations without an improvement larger than `min_delta`.

    It may trigger only once `start_ratio * epochs` epochs are done.
    """

    def __init__(self, cfg: Any, epochs: int) -> None:
        self.enabled, self.patience, self.min_delta = cfg.enabled, cfg.patience, cfg.min_delta
        self.start_epoch = math.ceil(cfg.start_ratio * epochs)
        self.best = math.inf
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record the monitored value after (1-based) `epoch`; True when training should stop."""
        if value < self.best - self.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        return self.enabled and self.bad_epochs >= self.patience and epoch >= self.start_epoch

    def state_dict(self) -> dict[str, float]:
        """Best value seen and validations since it."""
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, float]) -> None:
        """Continue counting from a saved state."""
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])
