"""Training progress on rank 0: smoothed loss, events/s, data-wait fraction and ETA."""
from __future__ import annotations

import logging
import math
import sys
import time
from datetime import timedelta

from torch import Tensor

from lib.engine.tracking import Tracker
from lib.engine.train_state import TrainState

log = logging.getLogger(__name__)

LOSS_SMOOTHING = 0.9  # weight of the past in the logged (exponentially smoothed) loss


class Progress:
    """A log line (and MLflow step metrics) every log_every optimizer steps, and a tqdm bar on a terminal.

    It reads where training stands from the public `state` and is told everything else; only
    rank 0 (`is_main`) logs. Created when `fit` starts: the ETA is measured from then.
    """

    def __init__(self, state: TrainState, tracker: Tracker, *, steps_per_epoch: int, epochs: int,
                 grad_accum_steps: int, log_every: int, world_size: int, is_main: bool) -> None:
        self.state, self.tracker = state, tracker
        self.steps_per_epoch, self.total_steps = steps_per_epoch, epochs * steps_per_epoch
        self.grad_accum_steps, self.log_every = grad_accum_steps, log_every
        self.world_size, self.is_main = world_size, is_main
        self.fit_start, self.steps_at_start = time.perf_counter(), state.global_step
        self.bar = None
        self.smoothed_loss: Tensor | None = None
        self._reset_window()

    def _reset_window(self) -> None:
        self.window_start, self.wait_s, self.samples = time.perf_counter(), 0.0, 0

    def start_epoch(self, n_batches: int) -> None:
        """A new (or resumed) epoch of `n_batches` batches begins at state.batch_in_epoch."""
        if self.is_main and sys.stdout.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=n_batches, initial=self.state.batch_in_epoch, desc=f"epoch {self.state.epoch + 1}",
                            leave=False)
        self.smoothed_loss = None
        self._reset_window()

    def waited(self, seconds: float) -> None:
        """Time spent waiting for the loader's next batch."""
        self.wait_s += seconds

    def micro_step(self, n_samples: int) -> None:
        """One batch of `n_samples` events went through forward and backward."""
        self.samples += n_samples
        if self.bar is not None:
            self.bar.update(1)

    def optimizer_step(self, loss: Tensor, grad_norm: Tensor | None, lr: float) -> None:
        """Smooth the loss; every log_every steps log a line (rank 0) and step metrics to MLflow."""
        self.smoothed_loss = loss if self.smoothed_loss is None else (
            LOSS_SMOOTHING * self.smoothed_loss + (1 - LOSS_SMOOTHING) * loss)
        state = self.state
        if state.global_step % self.log_every or not self.is_main:
            return
        elapsed = time.perf_counter() - self.window_start
        events_per_s = self.samples * self.world_size / elapsed
        seconds_per_step = (time.perf_counter() - self.fit_start) / (state.global_step - self.steps_at_start)
        eta = timedelta(seconds=round((self.total_steps - state.global_step) * seconds_per_step))
        loss_value = float(self.smoothed_loss)
        step_metrics = {"step/loss": loss_value, "step/lr": lr, "step/events_per_s": events_per_s,
                        "step/data_wait": self.wait_s / elapsed}
        if grad_norm is not None:
            step_metrics["step/grad_norm"] = float(grad_norm)
        step_in_epoch = math.ceil(state.batch_in_epoch / self.grad_accum_steps)
        log.info("epoch %d step %d/%d (global %d) loss %.5g lr %.3g %.0f events/s data-wait %.0f%% eta %s",
                 state.epoch + 1, step_in_epoch, self.steps_per_epoch, state.global_step, loss_value, lr,
                 events_per_s, 100 * self.wait_s / elapsed, eta)
        self.tracker.log_metrics(step_metrics, state.global_step)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss_value:.4g}")
        self._reset_window()

    def end_epoch(self) -> None:
        """Close the epoch's bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
