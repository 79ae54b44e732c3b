"""The training loop shared by MAE pretraining and regression.

Read `Trainer.fit` top to bottom: epochs of accumulated, clipped, mixed-precision optimizer
steps; validation; history, MLflow and checkpoints on rank 0; early stopping; export.
"""
from __future__ import annotations

import contextlib
import logging
import math
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lib.config import to_dict
from lib.engine.checkpoint import (
    capture_rng_state, check_resume_compatible, copy_checkpoint, epoch_checkpoint_name,
    find_resume_checkpoint, load_checkpoint, prune_epoch_checkpoints, restore_rng_state, save_checkpoint,
)
from lib.engine.distributed import (
    DistInfo, all_ranks_true, check_same_config, gather_objects, reduce_metrics, wrap_model,
)
from lib.engine.ema import ModelEMA
from lib.engine.optim import build_optimizer, build_scheduler
from lib.engine.preemption import Preempted, PreemptionFlag
from lib.engine.progress import Progress
from lib.engine.rundir import TrainingHistory
from lib.io.run_files import BEST_NAME, CHECKPOINT_DIR, CONFIG_NAME, HISTORY_NAME, LAST_NAME
from lib.engine.task import StepOutput, Task
from lib.engine.tracking import start_tracking

log = logging.getLogger(__name__)

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; no checkpoint is written after it."""


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
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best, self.bad_epochs = state["best"], int(state["bad_epochs"])


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _accumulate(sums: dict[str, Tensor], output: StepOutput) -> int:
    """Add the sample-weighted loss and metrics of one batch to `sums`; returns its sample count."""
    for name, value in {"loss": output.loss, **output.metrics}.items():
        weighted = value.detach().float() * output.n_samples
        sums[name] = sums[name] + weighted if name in sums else weighted
    return output.n_samples


class Trainer:
    """Trains `model` on `task`; resumes from checkpoint.resume_from or (auto_resume) run_dir/checkpoints/last.pt.

    `model` holds every trainable parameter. `train_loader` follows the loader interface:
    len(), iter(), set_epoch(epoch), state_dict(), load_state_dict(state); after
    load_state_dict of a mid-epoch state, iter() yields the rest of that epoch.
    """

    def __init__(self, cfg: Any, model: nn.Module, task: Task, train_loader: Any, val_loader: Any | None,
                 run_dir: Path, dist: DistInfo) -> None:
        self.cfg, self.training, self.task, self.dist = cfg, cfg.training, task, dist
        self.train_loader, self.val_loader, self.run_dir = train_loader, val_loader, Path(run_dir)
        self.config = to_dict(cfg)
        check_same_config(self.config)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = self.training.tf32

        resume_path = find_resume_checkpoint(cfg.checkpoint, self.run_dir)
        checkpoint = load_checkpoint(resume_path) if resume_path else None
        if checkpoint is not None:
            check_resume_compatible(checkpoint, self.config, resume_path)
            model.load_state_dict(checkpoint["model"])
        self.raw_model = model.to(dist.device)
        self.ema = ModelEMA(self.raw_model, self.training.ema.decay) if self.training.ema.enabled else None
        compiled = torch.compile(self.raw_model) if self.training.compile else self.raw_model
        self.model = wrap_model(compiled, dist)
        self.eval_model = self.ema.module if self.ema else compiled

        self.accum = self.training.grad_accum_steps
        self.steps_per_epoch = math.ceil(len(train_loader) / self.accum)
        self.lr = self.training.effective_lr(cfg.data.batch_size, dist.world_size)
        self.optimizer = build_optimizer(self.raw_model, self.training, self.lr)
        self.scheduler = build_scheduler(self.optimizer, self.training, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(dist.device.type, enabled=self.training.amp == "fp16")
        self.autocast_dtype = AMP_DTYPES.get(self.training.amp)
        self.early_stopping = EarlyStopping(self.training.early_stopping, self.training.epochs)

        self.epoch = self.batch_in_epoch = self.global_step = 0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.mlflow_run_id: str | None = None
        self._sums: dict[str, Tensor] = {}
        self._n_samples = 0
        self._pending_rank_state: dict[str, Any] | None = None
        if checkpoint is not None:
            self._restore(checkpoint, resume_path)
        self.history = TrainingHistory(self.run_dir / HISTORY_NAME, completed_epochs=self.epoch)
        self.preemption = PreemptionFlag()
        self.preemption.install()

    # ---------------------------------------------------------------- resume
    def _restore(self, checkpoint: dict[str, Any], path: Path) -> None:
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if checkpoint["scaler"]:
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.early_stopping.load_state_dict(checkpoint["early_stopping"])
        self.epoch, self.batch_in_epoch = checkpoint["epoch"], checkpoint["batch_in_epoch"]
        self.global_step = checkpoint["global_step"]
        self.best_metric, self.best_epoch = checkpoint["best_metric"], checkpoint["best_epoch"]
        self.mlflow_run_id = checkpoint["mlflow_run_id"]
        rank_states = checkpoint["rank_states"]
        if len(rank_states) == self.dist.world_size:
            self._pending_rank_state = rank_states[self.dist.rank]
        else:
            log.warning("%s was written by %d ranks, this run has %d: RNG states are not restored and epoch %d "
                        "restarts from its first batch", path, len(rank_states), self.dist.world_size, self.epoch + 1)
            self.batch_in_epoch = 0
        log.info("resumed from %s at epoch %d, batch %d, global step %d",
                 path, self.epoch + 1, self.batch_in_epoch, self.global_step)

    def _restore_rank_state(self) -> None:
        state, self._pending_rank_state = self._pending_rank_state, None
        restore_rng_state(state["rng"], self.dist.device)
        if self.batch_in_epoch > 0:
            self._sums = {k: v.to(self.dist.device) for k, v in state["train_sums"].items()}
            self._n_samples = state["train_n"]

    # ------------------------------------------------------------------ fit
    def fit(self) -> dict[str, Any]:
        """Train until training.epochs or early stopping; returns final metrics, best metric and paths."""
        tracker = start_tracking(self.cfg, self.config, self.mlflow_run_id, self.dist.is_main)
        self.tracker = tracker
        self.mlflow_run_id = tracker.run_id or self.mlflow_run_id
        effective_batch = self.cfg.data.batch_size * self.dist.world_size * self.accum
        log.info("lr %.3g (base %.3g, effective batch %d%s), %d optimizer steps per epoch, %d epochs, %.3gM params",
                 self.lr, self.training.lr, effective_batch, "" if self.training.lr_scaling else ", no scaling",
                 self.steps_per_epoch, self.training.epochs,
                 sum(p.numel() for p in self.raw_model.parameters()) / 1e6)
        self._fit_start, self._steps_at_start = time.perf_counter(), self.global_step
        record: dict[str, Any] = self.history.records[-1] if self.history.records else {}
        stopped_early = False
        status = "FAILED"
        try:
            while self.epoch < self.training.epochs and not stopped_early:
                record, stopped_early = self._run_epoch()
            if self.dist.is_main:
                self.task.export(self._export_model(), self.run_dir, "last")
            status = "FINISHED"
        except (KeyboardInterrupt, Preempted):
            status = "KILLED"
            raise
        finally:
            tracker.log_artifacts([self.run_dir / CONFIG_NAME, self.run_dir / HISTORY_NAME, self.run_dir / "plots"])
            tracker.end(status)
        checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        return {
            "final_metrics": record, "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "monitor": f"val/{self.task.monitor}", "epochs_completed": self.epoch, "global_step": self.global_step,
            "stopped_early": stopped_early, "run_dir": self.run_dir, "last_checkpoint": checkpoint_dir / LAST_NAME,
            "best_checkpoint": checkpoint_dir / BEST_NAME if self.best_epoch is not None else None,
            "mlflow_run_id": self.mlflow_run_id,
        }

    def _run_epoch(self) -> tuple[dict[str, Any], bool]:
        epoch_start = time.perf_counter()
        train_metrics = self._train_epoch()
        due = (self.epoch + 1) % self.training.val_every == 0 or self.epoch + 1 == self.training.epochs
        val_metrics = self._validate() if due and self.val_loader is not None else {}
        self.epoch += 1
        self.batch_in_epoch, self._sums, self._n_samples = 0, {}, 0
        record = {"epoch": self.epoch, "global_step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                  "time_s": time.perf_counter() - epoch_start, **train_metrics, **val_metrics}
        improved, stop = False, False
        if val_metrics:
            monitored = self._monitored(val_metrics)
            improved = self.best_metric is None or monitored < self.best_metric
            if improved:
                self.best_metric, self.best_epoch = monitored, self.epoch
            stop = self.early_stopping.update(monitored, self.epoch)
        if self.dist.is_main:
            self.history.append(record)
            self.tracker.log_metrics({k: v for k, v in record.items() if k != "global_step"}, self.global_step)
            log.info("epoch %d/%d done in %s: %s", self.epoch, self.training.epochs,
                     timedelta(seconds=round(record["time_s"])),
                     ", ".join(f"{k} {v:.5g}" for k, v in {**train_metrics, **val_metrics}.items()))
        names = [LAST_NAME] + [BEST_NAME] * improved
        if self.epoch % self.cfg.checkpoint.save_interval == 0:
            names.append(epoch_checkpoint_name(self.epoch))
        self._save(names)
        if improved and self.dist.is_main:
            self.task.export(self._export_model(), self.run_dir, "best")
        if stop:
            log.info("early stopping after epoch %d: no improvement of %s for %d validations (best %.5g, epoch %s)",
                     self.epoch, self.task.monitor, self.early_stopping.bad_epochs, self.best_metric, self.best_epoch)
        return record, stop

    def _monitored(self, val_metrics: dict[str, float]) -> float:
        key = f"val/{self.task.monitor}"
        if key not in val_metrics:
            raise ValueError(f"task.monitor={self.task.monitor!r} is not among the validation metrics "
                           f"{sorted(k.removeprefix('val/') for k in val_metrics)}; fix the task's monitor")
        return val_metrics[key]

    def _export_model(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.raw_model

    # ---------------------------------------------------------------- train
    def _train_epoch(self) -> dict[str, float]:
        self.model.train()
        loader = self.train_loader
        loader.set_epoch(self.epoch)
        start, n_batches = self.batch_in_epoch, len(loader)
        if start == 0 and self._pending_rank_state is not None:
            self._restore_rank_state()
        if start > 0:
            loader.load_state_dict(self._pending_rank_state["data"])
        batches = iter(loader)
        progress = Progress(self, n_batches, start)
        finite = torch.ones((), dtype=torch.bool, device=self.dist.device)
        last_output: StepOutput | None = None
        for index in range(start, n_batches):
            wait_start = time.perf_counter()
            batch = _to_device(next(batches), self.dist.device)
            progress.waited(time.perf_counter() - wait_start)
            if self._pending_rank_state is not None:  # mid-epoch resume: after the loader started (may draw RNG)
                self._restore_rank_state()
            group_start = index - index % self.accum
            group_size = min(self.accum, n_batches - group_start)
            steps_now = index + 1 == group_start + group_size
            sync = contextlib.nullcontext() if steps_now or self.dist.world_size == 1 else self.model.no_sync()
            with sync:
                with self._autocast():
                    last_output = self.task.training_step(self.model, batch, self.global_step)
                self.scaler.scale(last_output.loss / group_size).backward()
            finite &= torch.isfinite(last_output.loss.detach())
            self._n_samples += _accumulate(self._sums, last_output)
            progress.micro_step(last_output.n_samples)
            if not steps_now:
                continue
            if not all_ranks_true(bool(finite), self.dist.device):
                self._raise_non_finite(last_output)
            grad_norm = self._optimizer_step()
            self.global_step += 1
            self.batch_in_epoch = index + 1
            progress.optimizer_step(last_output.loss.detach(), grad_norm)
            if not all_ranks_true(not self.preemption.requested, self.dist.device):
                self._save([LAST_NAME])
                raise Preempted(f"preempted at global step {self.global_step}; resume from "
                                f"{self.run_dir / CHECKPOINT_DIR / LAST_NAME}")
            every = self.cfg.checkpoint.save_every_steps
            if every and self.global_step % every == 0 and index + 1 < n_batches:
                self._save([LAST_NAME])
        progress.close()
        return {f"train/{k}": v for k, v in reduce_metrics(self._sums, self._n_samples).items()}

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.dist.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None)

    def _optimizer_step(self) -> Tensor | None:
        grad_norm = None
        if self.training.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            grad_norm = nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.training.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():  # fp16: the scaler skipping an overflowing step is expected
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.raw_model)
        return grad_norm

    def _raise_non_finite(self, output: StepOutput) -> None:
        metrics = {k: float(v) for k, v in output.metrics.items()}
        last = self.run_dir / CHECKPOINT_DIR / LAST_NAME
        raise NonFiniteLossError(
            f"non-finite training loss in epoch {self.epoch + 1}, global step {self.global_step + 1} "
            f"(loss {float(output.loss.detach())}, metrics {metrics}); no checkpoint was written after it, "
            f"the last good one is {last if last.exists() else 'none (no checkpoint yet)'}. Lower training.lr, enable "
            "training.grad_clip, or check the input data"
        )

    # ------------------------------------------------------------- validate
    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        model = self.eval_model
        model.eval()
        sums: dict[str, Tensor] = {}
        n_samples = 0
        self.val_loader.set_epoch(0)  # the same validation events every time
        epoch_end = getattr(self.task, "validation_epoch_end", None)
        for batch in self.val_loader:
            with self._autocast():
                output = self.task.validation_step(model, _to_device(batch, self.dist.device))
            n_samples += _accumulate(sums, output)
        metrics = reduce_metrics(sums, n_samples)
        if epoch_end is not None:
            metrics.update(epoch_end())
        return {f"val/{k}": v for k, v in metrics.items()}

    # ----------------------------------------------------------- checkpoint
    def _save(self, names: list[str]) -> None:
        """Write the checkpoint under each of `names` (collective: every rank contributes its RNG/data state)."""
        rank_state = {
            "rng": capture_rng_state(self.dist.device), "data": self.train_loader.state_dict(),
            "train_sums": {k: v.detach().cpu() for k, v in self._sums.items()}, "train_n": self._n_samples,
        }
        rank_states = gather_objects(rank_state)
        if not self.dist.is_main:
            return
        state = {
            "schema_version": self.config["schema_version"], "config": self.config,
            "model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None, "rank_states": rank_states,
            "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "global_step": self.global_step,
            "best_metric": self.best_metric, "best_epoch": self.best_epoch,
            "early_stopping": self.early_stopping.state_dict(), "mlflow_run_id": self.mlflow_run_id,
        }
        checkpoint_dir = self.run_dir / CHECKPOINT_DIR
        first = checkpoint_dir / names[0]
        save_checkpoint(state, first)
        for name in names[1:]:
            copy_checkpoint(first, checkpoint_dir / name)
        pruned = prune_epoch_checkpoints(checkpoint_dir, self.cfg.checkpoint.keep_last_n)
        log.debug("saved %s at global step %d (pruned %s)", names, self.global_step, [p.name for p in pruned])
