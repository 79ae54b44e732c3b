"""The training loop shared by MAE pretraining and regression.

Read it top to bottom: `fit` runs epochs; `_run_epoch` trains, saves, validates, records,
checkpoints and exports; `_train_epoch` runs the steps (accumulated, clipped, mixed-precision
optimizer steps). Persistence belongs to the CheckpointManager: the trainer hands it its
stateful parts, and `_save` is where it checks that the weights are finite before any write.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from lib.config import to_dict
from lib.engine.checkpoint import epoch_checkpoint_name
from lib.engine.checkpoint_manager import CheckpointManager
from lib.engine.distributed import DistInfo, all_ranks_true, check_same_config, gather_objects, wrap_model
from lib.engine.ema import ModelEMA
from lib.engine.finite import NonFiniteError, all_finite, last_finite_checkpoint
from lib.engine.optim import build_optimizer, build_scheduler
from lib.engine.preemption import Preempted, PreemptionFlag
from lib.engine.progress import Progress
from lib.engine.rng import RNGState
from lib.engine.rundir import TrainingHistory
from lib.engine.task import StepOutput, Task
from lib.engine.seed_controls import EARLY_STOPPING, OPTIMIZER, SCHEDULER
from lib.engine.tracking import start_tracking
from lib.engine.train_state import EarlyStopping, MetricSums, TrainState
from lib.io.run_files import BEST_NAME, CONFIG_NAME, HISTORY_NAME, LAST_NAME

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
TRAIN_STATE = "train_state"
RNG, DATA, TRAIN_METRICS = "rng", "data", "train_metrics"
"""Names of the per-rank parts in a checkpoint's rank_states."""


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


class Trainer:
    """Trains `model` on `task`; resumes from run_dir/checkpoints/last.pt, else checkpoint.resume_from.

    `model` holds every trainable parameter. `train_loader` follows the loader interface:
    len(), iter(), set_epoch(epoch), state_dict(), load_state_dict(state); after
    load_state_dict of a mid-epoch state, iter() yields the rest of that epoch. `checkpoints`
    is the run's CheckpointManager (made here when not given).
    """

    def __init__(self, cfg: Any, model: nn.Module, task: Task, train_loader: Any, val_loader: Any | None,
                 run_dir: Path, dist: DistInfo, checkpoints: CheckpointManager | None = None) -> None:
        self.cfg, self.training, self.task, self.dist = cfg, cfg.training, task, dist
        self.train_loader, self.val_loader, self.run_dir = train_loader, val_loader, Path(run_dir)
        self.config = to_dict(cfg)
        check_same_config(self.config)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.training.tf32
        self.checkpoints = checkpoints or CheckpointManager(cfg, self.run_dir, dist)

        self.raw_model = model.to(dist.device)
        self.checkpoints.attach({"model": self.raw_model})  # first: the EMA, torch.compile and DDP start from it
        self.ema = ModelEMA(self.raw_model, self.training.ema.decay) if self.training.ema.enabled else None
        compiled = torch.compile(self.raw_model) if self.training.compile else self.raw_model
        self.model = wrap_model(compiled, dist)
        self.eval_model = self.ema.module if self.ema else compiled

        self.accum = self.training.grad_accum_steps
        self.steps_per_epoch = math.ceil(len(train_loader) / self.accum)
        self.lr = self.training.effective_lr(cfg.data.batch_size, dist.world_size)
        self.optimizer = build_optimizer(self.raw_model, self.training, self.lr)
        self.scheduler = build_scheduler(self.optimizer, self.training, self.steps_per_epoch,
                                         start_step=self.checkpoints.schedule_start_step)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=self.training.amp == "fp16")
        self.autocast_dtype = AMP_DTYPES.get(self.training.amp)
        self.early_stopping = EarlyStopping(self.training.early_stopping, self.training.epochs)
        self.state = TrainState()
        self.train_metrics = MetricSums(dist.device)
        self._attach_parts()
        self.history = TrainingHistory(self.run_dir / HISTORY_NAME, completed_epochs=self.state.epoch)
        self.preemption = PreemptionFlag()

    def _attach_parts(self) -> None:
        """Hand the stateful parts to the checkpoint manager; when resuming, the shared ones are restored now."""
        shared: dict[str, Any] = {OPTIMIZER: self.optimizer, SCHEDULER: self.scheduler, "scaler": self.scaler,
                                  EARLY_STOPPING: self.early_stopping, TRAIN_STATE: self.state}
        if self.ema is not None:
            shared["ema"] = self.ema
        self.checkpoints.attach(shared, flat={TRAIN_STATE})
        self.checkpoints.attach_per_rank({RNG: RNGState(self.dist.device), DATA: self.train_loader,
                                          TRAIN_METRICS: self.train_metrics})
        if not self.checkpoints.resuming:
            return
        if self.checkpoints.rank_state_lost and self.state.batch_in_epoch:
            log.warning("epoch %d restarts from its first batch", self.state.epoch + 1)
            self.state.batch_in_epoch = 0
        log.info("resumed from %s at epoch %d, batch %d, global step %d", self.checkpoints.resume_path,
                 self.state.epoch + 1, self.state.batch_in_epoch, self.state.global_step)
        if self.checkpoints.reconcile_best(self.state) and self.dist.is_main:
            self.task.export(self._export_model(), self.run_dir, "best")

    # ------------------------------------------------------------------ fit
    def fit(self) -> dict[str, Any]:
        """Train until training.epochs or early stopping; returns final metrics, best metric and paths."""
        self.preemption.install()
        self.tracker = start_tracking(self.cfg, self.config, self.state.mlflow_run_id, self.dist.is_main,
                                      tags=self.checkpoints.mlflow_tags)
        self._log_plan()
        self.progress = Progress(
            self.state, self.tracker, steps_per_epoch=self.steps_per_epoch, epochs=self.training.epochs,
            grad_accum_steps=self.accum, log_every=self.training.log_every, world_size=self.dist.world_size,
            is_main=self.dist.is_main)
        record: dict[str, Any] = self.history.records[-1] if self.history.records else {}
        stopped_early, status = False, "FAILED"
        try:
            while self.state.epoch < self.training.epochs and not stopped_early:
                record, stopped_early = self._run_epoch()
            if self.dist.is_main:
                self.task.export(self._export_model(), self.run_dir, "last")
            status = "FINISHED"
        except (KeyboardInterrupt, Preempted):
            status = "KILLED"
            raise
        finally:
            self.preemption.uninstall()
            self.tracker.log_artifacts([self.run_dir / CONFIG_NAME, self.run_dir / HISTORY_NAME,
                                        self.run_dir / "plots"])
            self.tracker.end(status)
        return {
            "final_metrics": record, "best_metric": self.state.best_metric, "best_epoch": self.state.best_epoch,
            "monitor": f"val/{self.task.monitor}", "epochs_completed": self.state.epoch,
            "global_step": self.state.global_step, "stopped_early": stopped_early, "run_dir": self.run_dir,
            "last_checkpoint": self.checkpoints.last_path,
            "best_checkpoint": self.checkpoints.directory / BEST_NAME if self.state.best_epoch is not None else None,
            "mlflow_run_id": self.tracker.run_id or self.state.mlflow_run_id,
        }

    def _log_plan(self) -> None:
        effective_batch = self.cfg.data.batch_size * self.dist.world_size * self.accum
        log.info("lr %.3g (base %.3g, effective batch %d%s), %d optimizer steps per epoch, %d epochs, %.3gM params",
                 self.lr, self.training.lr, effective_batch, "" if self.training.lr_scaling else ", no scaling",
                 self.steps_per_epoch, self.training.epochs,
                 sum(p.numel() for p in self.raw_model.parameters()) / 1e6)

    def _run_epoch(self) -> tuple[dict[str, Any], bool]:
        """Train one epoch, validate when due, record it, checkpoint, export the best; returns (record, stop).

        A trained epoch is saved before its validation, so that a requeue during validation keeps it.
        last.pt is written before best.pt: a run killed between the two is repaired on resume from last.pt.
        """
        epoch_start, steps_before = time.perf_counter(), self.state.global_step
        train_metrics = self._train_epoch()
        epoch = self.state.epoch + 1
        due = self.val_loader is not None and (epoch % self.training.val_every == 0 or epoch == self.training.epochs)
        if due and self.state.global_step > steps_before:
            self._save([LAST_NAME])
        val_metrics = self._validate(epoch) if due else {}
        self.state.epoch, self.state.batch_in_epoch = epoch, 0
        self.train_metrics.reset()
        record = {"epoch": epoch, "global_step": self.state.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                  "time_s": time.perf_counter() - epoch_start, **train_metrics, **val_metrics}
        improved, stop = self._judge(val_metrics)
        if self.dist.is_main:
            self.history.append(record)
            self.tracker.log_metrics({k: v for k, v in record.items() if k != "global_step"}, self.state.global_step)
            log.info("epoch %d/%d done in %s: %s", epoch, self.training.epochs,
                     timedelta(seconds=round(record["time_s"])),
                     ", ".join(f"{k} {v:.5g}" for k, v in {**train_metrics, **val_metrics}.items()))
        names = [LAST_NAME] + [BEST_NAME] * improved
        if epoch % self.cfg.checkpoint.save_interval == 0:
            names.append(epoch_checkpoint_name(epoch))
        self._save(names)
        if improved and self.dist.is_main:
            self.task.export(self._export_model(), self.run_dir, "best")
        if stop:
            log.info("early stopping after epoch %d: no improvement of %s for %d validations (best %.5g, epoch %s)",
                     epoch, self.task.monitor, self.early_stopping.bad_epochs, self.state.best_metric,
                     self.state.best_epoch)
        return record, stop

    def _judge(self, val_metrics: dict[str, float]) -> tuple[bool, bool]:
        """(improved on the best so far, early stopping says stop) after a validation; (False, False) without one."""
        if not val_metrics:
            return False, False
        key = f"val/{self.task.monitor}"
        if key not in val_metrics:
            raise ValueError(f"task.monitor={self.task.monitor!r} is not among the validation metrics "
                             f"{sorted(k.removeprefix('val/') for k in val_metrics)}; fix the task's monitor")
        for name in dict.fromkeys([key, "val/loss"]):
            if name in val_metrics and not math.isfinite(val_metrics[name]):
                raise self._non_finite(f"non-finite validation metric {name} = {val_metrics[name]} after epoch "
                                       f"{self.state.epoch}")
        monitored = val_metrics[key]
        improved = self.state.best_metric is None or monitored < self.state.best_metric
        if improved:
            self.state.best_metric, self.state.best_epoch = monitored, self.state.epoch
        return improved, self.early_stopping.update(monitored, self.state.epoch)

    def _export_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.raw_model

    # ---------------------------------------------------------------- train
    def _train_epoch(self) -> dict[str, float]:
        """Train on the rest of the current epoch; returns its train/ metrics (every batch of every rank)."""
        self.model.train()
        start, n_batches = self.state.batch_in_epoch, len(self.train_loader)
        batches = self._start_loader()
        self.progress.start_epoch(n_batches)
        finite = torch.ones((), dtype=torch.bool, device=self.dist.device)
        for index in range(start, n_batches):
            wait_start = time.perf_counter()
            batch = _to_device(next(batches), self.dist.device)
            self.progress.waited(time.perf_counter() - wait_start)
            if index == start:  # a mid-epoch checkpoint captured these after its loader had started
                self.checkpoints.restore_rank(RNG, TRAIN_METRICS)
            group_start = index - index % self.accum
            group_size = min(self.accum, n_batches - group_start)
            steps_now = index + 1 == group_start + group_size
            output = self._forward_backward(batch, group_size, sync=steps_now)
            finite &= torch.isfinite(output.loss.detach())
            if not steps_now:
                continue
            grad_norm = self._clip_gradients()
            if grad_norm is not None and not self.scaler.is_enabled():  # fp16: the scaler skips overflowing steps
                finite &= torch.isfinite(grad_norm)
            if not all_ranks_true(bool(finite), self.dist.device):
                raise self._non_finite(self._describe_step(output, grad_norm))
            self._optimizer_step()
            self.state.global_step += 1
            self.state.batch_in_epoch = index + 1
            self.progress.optimizer_step(output.loss.detach(), grad_norm, self.optimizer.param_groups[0]["lr"])
            self.tracker.begin()  # tracking's set-up never delays the first step (a no-op after it)
            self._checkpoint_after_step(more_batches=index + 1 < n_batches)
        self.checkpoints.restore_rank(RNG, TRAIN_METRICS)  # saved after the epoch's last step: nothing left to train
        self.progress.end_epoch()
        return {f"train/{k}": v for k, v in self.train_metrics.reduce().items()}

    def _start_loader(self) -> Iterator[dict[str, Any]]:
        """Start the train loader at the current batch of the current epoch.

        A resumed rank gets its saved parts back where they were captured: at an epoch's end,
        its RNG before the loader starts; mid-epoch, the loader position now, and its RNG and
        partial metrics after the loader started (in `_train_epoch`).
        """
        self.train_loader.set_epoch(self.state.epoch)
        self.checkpoints.restore_rank(DATA if self.state.batch_in_epoch else RNG)
        return iter(self.train_loader)

    def _forward_backward(self, batch: dict[str, Any], group_size: int, sync: bool) -> StepOutput:
        """Loss and gradients of one batch of an accumulation group of `group_size` batches.

        Under DDP the gradients are all-reduced only when `sync` (the group's last batch)."""
        no_sync = not sync and self.dist.world_size > 1
        with self.model.no_sync() if no_sync else contextlib.nullcontext():
            with self._autocast():
                output = self.task.training_step(self.model, batch, self.state.global_step)
            self.scaler.scale(output.loss / group_size).backward()
        self.train_metrics.add(output)
        self.progress.micro_step(output.n_samples)
        return output

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _clip_gradients(self) -> Tensor | None:
        """Clip the gradients to training.grad_clip; their norm before clipping (None without clipping)."""
        if self.training.grad_clip is None:
            return None
        self.scaler.unscale_(self.optimizer)
        return nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.training.grad_clip, foreach=True)

    def _optimizer_step(self) -> None:
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # fp16: the scaler skipping an overflowing step is expected
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)

    # ------------------------------------------------------- save and stop
    def _preempted(self) -> bool:
        """True on every rank once any rank received a preemption signal (collective)."""
        return not all_ranks_true(not self.preemption.requested, self.dist.device)

    def _checkpoint_after_step(self, more_batches: bool) -> None:
        """After an optimizer step: on a preemption request save last.pt and stop; else save every save_every_steps."""
        if self._preempted():
            self._save([LAST_NAME])
            raise Preempted(f"preempted at global step {self.state.global_step}; resume from "
                            f"{self.checkpoints.last_path}")
        every = self.cfg.checkpoint.save_every_steps
        if every and self.state.global_step % every == 0 and more_batches:
            self._save([LAST_NAME])

    def _save(self, names: list[str]) -> None:
        """Write the checkpoints `names` once every rank found the weights finite (collective); else stop."""
        weights = [*self.raw_model.state_dict().values(), *(self.ema.module.state_dict().values() if self.ema else [])]
        if not all_ranks_true(all_finite(weights), self.dist.device):
            raise self._non_finite(f"non-finite weights after global step {self.state.global_step} "
                                   f"(epoch {self.state.epoch + 1})")
        self.state.mlflow_run_id = self.tracker.run_id or self.state.mlflow_run_id
        self.checkpoints.save(names)

    def _describe_step(self, output: StepOutput, grad_norm: Tensor | None) -> str:
        metrics = {k: float(v) for k, v in output.metrics.items()}
        norm = f", gradient norm {float(grad_norm)}" if grad_norm is not None else ""
        return (f"non-finite training loss or gradient in epoch {self.state.epoch + 1}, global step "
                f"{self.state.global_step + 1} (loss {float(output.loss.detach())}{norm}, metrics {metrics})")

    def _non_finite(self, what: str) -> NonFiniteError:
        """The error that stops a run gone non-finite; rank 0 names the newest checkpoint verified finite."""
        if self.dist.is_main:
            last = last_finite_checkpoint(self.checkpoints.directory)
            where = f"the last finite checkpoint is {last}" if last else "there is no finite checkpoint yet"
        else:
            where = "rank 0 names the last finite checkpoint"
        return NonFiniteError(f"{what}; nothing was saved after it, {where}. Lower training.lr, enable "
                              "training.grad_clip, or check the input data")

    # ------------------------------------------------------------- validate
    @torch.no_grad()
    def _validate(self, epoch: int) -> dict[str, float]:
        """Validation metrics of (1-based) `epoch`; stops (Preempted) on a preemption request between batches."""
        model = self.eval_model
        model.eval()
        sums = MetricSums(self.dist.device)
        self.val_loader.set_epoch(0)  # the same validation events every time
        batches = iter(self.val_loader)
        for _ in range(max(gather_objects(len(self.val_loader)))):  # ranks may hold different batch counts
            if self._preempted():
                raise Preempted(f"preempted during the validation of epoch {epoch}; resume from "
                                f"{self.checkpoints.last_path} (its training is saved, its validation runs again)")
            batch = next(batches, None)
            if batch is None:
                continue
            with self._autocast():
                output = self.task.validation_step(model, _to_device(batch, self.dist.device))
            sums.add(output)
        metrics = sums.reduce()
        epoch_end = getattr(self.task, "validation_epoch_end", None)
        if epoch_end is not None:
            metrics.update(epoch_end())
        return {f"val/{k}": v for k, v in metrics.items()}
