"""The task protocol: what the shared Trainer asks of MAE pretraining and regression."""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

from torch import Tensor, nn


class StepOutput(NamedTuple):
    """Result of one training or validation step on one batch.

    loss: scalar mean over the batch (the trainer back-propagates it during training);
    metrics: detached scalar batch means (logged as train/<name>, val/<name>);
    n_samples: events in the batch (weights the metrics across batches and ranks).
    """

    loss: Tensor
    metrics: dict[str, Tensor]
    n_samples: int


@runtime_checkable
class Task(Protocol):
    """What a training objective provides to `lib.engine.Trainer`."""

    monitor: str
    """Validation metric (lower is better) deciding best.pt and early stopping; "loss" is always available."""

    def training_step(self, model: nn.Module, batch: dict[str, Any], step: int) -> StepOutput:
        """Forward one batch (already on the device) in training mode; `step` is the global optimizer step."""
        ...

    def validation_step(self, model: nn.Module, batch: dict[str, Any]) -> StepOutput:
        """Forward one batch in eval mode (called under torch.no_grad)."""
        ...

    def export(self, model: nn.Module, run_dir: Path, tag: str) -> None:
        """Write exported weights for `tag` ("best" or "last"); called on rank 0 only."""
        ...

    # Optional: `validation_epoch_end(self) -> dict[str, float]`, called on every rank after the
    # validation batches, returns metrics computed over the whole validation set (e.g. resolutions
    # from residuals gathered across ranks); they are logged as val/<name>.
