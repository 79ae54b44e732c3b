"""Per-epoch training progress: smoothed loss, events/s, data-wait fraction and ETA on rank 0."""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta
from typing import Any

from torch import Tensor

log = logging.getLogger(__name__)

LOSS_SMOOTHING = 0.9  # weight of the past in the logged (exponentially smoothed) loss


class Progress:
    """Per-epoch progress: a log line every log_every optimizer steps (and a tqdm bar on a terminal)."""

    def __init__(self, trainer: Any, n_batches: int, start: int) -> None:
        self.trainer, self.n_batches = trainer, n_batches
        self.is_main = trainer.dist.is_main
        self.bar = None
        if self.is_main and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=n_batches, initial=start, desc=f"epoch {trainer.epoch + 1}", leave=False)
        self.smoothed_loss: Tensor | None = None
        self._reset_window()

    def _reset_window(self) -> None:
        self.window_start, self.wait_s, self.samples = time.perf_counter(), 0.0, 0

    def waited(self, seconds: float) -> None:
        self.wait_s += seconds

    def micro_step(self, n_samples: int) -> None:
        self.samples += n_samples
        if self.bar is not None:
            self.bar.update(1)

    def optimizer_step(self, loss: Tensor, grad_norm: Tensor | None) -> None:
        """Smooth the loss; every log_every steps log a line (rank 0) and step metrics to MLflow."""
        self.smoothed_loss = loss if self.smoothed_loss is None else (
            LOSS_SMOOTHING * self.smoothed_loss + (1 - LOSS_SMOOTHING) * loss)
        trainer = self.trainer
        if trainer.global_step % trainer.training.log_every or not self.is_main:
            return
        elapsed = time.perf_counter() - self.window_start
        events_per_s = self.samples * trainer.dist.world_size / elapsed
        steps_done = trainer.global_step - trainer._steps_at_start
        remaining = trainer.training.epochs * trainer.steps_per_epoch - trainer.global_step
        eta = timedelta(seconds=round(remaining * (time.perf_counter() - trainer._fit_start) / steps_done))
        lr = trainer.optimizer.param_groups[0]["lr"]
        loss_value = float(self.smoothed_loss)
        step_metrics = {"step/loss": loss_value, "step/lr": lr, "step/events_per_s": events_per_s,
                        "step/data_wait": self.wait_s / elapsed}
        if grad_norm is not None:
            step_metrics["step/grad_norm"] = float(grad_norm)
        log.info("epoch %d step %d/%d (global %d) loss %.5g lr %.3g %.0f events/s data-wait %.0f%% eta %s",
                 trainer.epoch + 1, math.ceil(trainer.batch_in_epoch / trainer.accum), trainer.steps_per_epoch,
                 trainer.global_step, loss_value, lr, events_per_s, 100 * self.wait_s / elapsed, eta)
        trainer.tracker.log_metrics(step_metrics, trainer.global_step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss_value:.4g}")
        self._reset_window()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
