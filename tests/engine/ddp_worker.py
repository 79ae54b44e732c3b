"""Toy model, loader, task and config for the engine tests, and the torchrun worker of the DDP tests.

As a script (`torchrun --standalone --nproc_per_node=2 tests/engine/ddp_worker.py OUT_DIR`) each
rank: (1) computes first-step gradients of the toy model under DDP on its half of a global
batch, (2) checks configs that differ between ranks, (3) all-reduces metrics from batches of a
rank-dependent size, (4) runs the Trainer for one epoch with rank-dependent batch sizes.
Rank 0 saves what it saw to OUT_DIR/ddp.pt.

With a second argument `preempt STEP`, the ranks train instead and only rank 1 receives SIGUSR1,
in training step STEP; each rank writes how it stopped to OUT_DIR/rank<r>.json.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

if __name__ == "__main__":  # run as a script by torchrun: make `lib` and `tests` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from lib.config import MAEConfig
from lib.engine import (
    DistributedSetupError, StepOutput, Trainer, cleanup, init_distributed, prepare_run_dir, reduce_metrics,
)
from lib.engine.distributed import check_same_config, wait_for_all_ranks
from lib.engine.preemption import Preempted

N_FEATURES = 4


class ToyModel(nn.Module):
    """Linear -> LayerNorm -> (Dropout) -> Linear regression on N_FEATURES inputs."""

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__()
        self.hidden = nn.Linear(N_FEATURES, 8)
        self.norm = nn.LayerNorm(8)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(torch.tanh(self.norm(self.hidden(x))))).squeeze(-1)


def toy_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs (n, N_FEATURES) and targets (n,) from a fixed linear rule plus noise."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, N_FEATURES, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(n, generator=generator)
    return x, y


class ToyLoader:
    """Follows the EventLoader interface over in-memory tensors (shuffled per epoch, drops the last partial batch)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, seed: int = 0):
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.epoch = self.position = 0

    def __len__(self) -> int:
        return len(self.x) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]

    def __iter__(self):
        torch.empty((), dtype=torch.int64).random_()  # like DataLoader with workers: draws a base seed when started
        n = len(self) * self.batch_size
        order = (torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed + self.epoch))[:n]
                 if self.shuffle else torch.arange(n))
        for index in range(self.position, len(self)):
            self.position = index + 1
            rows = order[index * self.batch_size:(index + 1) * self.batch_size]
            yield {"x": self.x[rows], "y": self.y[rows]}


class Interrupted(Exception):
    """Raised by ToyTask to simulate a job killed at a given step."""


class ToyTask:
    """Masked squared error; masks come from the global torch RNG so resumes must restore it."""

    monitor = "loss"

    def __init__(self, keep_fraction: float | None = 0.75, nan_at_step: int | None = None,
                 interrupt_at_step: int | None = None, constant_val_loss: float | None = None) -> None:
        self.keep_fraction, self.nan_at_step, self.interrupt_at_step = keep_fraction, nan_at_step, interrupt_at_step
        self.constant_val_loss = constant_val_loss
        self.exports: list[str] = []

    def _loss(self, model: nn.Module, batch: dict[str, torch.Tensor], masked: bool) -> StepOutput:
        error = (model(batch["x"]) - batch["y"]) ** 2
        if masked and self.keep_fraction is not None:
            keep = (torch.rand(error.shape) < self.keep_fraction).float()
            loss = (error * keep).sum() / keep.sum().clamp(min=1.0)
        else:
            loss = error.mean()
        return StepOutput(loss, {"mse": error.mean().detach()}, len(error))

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        if step == self.interrupt_at_step:
            raise Interrupted(f"interrupted at step {step}")
        output = self._loss(model, batch, masked=True)
        if step == self.nan_at_step:
            output = output._replace(loss=output.loss * float("nan"))
        return output

    def validation_step(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> StepOutput:
        output = self._loss(model, batch, masked=False)
        if self.constant_val_loss is not None:
            output = output._replace(loss=output.loss * 0 + self.constant_val_loss)
        return output

    def export(self, model: nn.Module, run_dir: Path, tag: str) -> None:
        self.exports.append(tag)
        torch.save(model.state_dict(), run_dir / f"toy_{tag}.pt")


def toy_config(save_dir: Path, run_name: str = "toy", **sections: dict[str, Any]) -> MAEConfig:
    """Small, fast MAEConfig: MLflow off, 2 epochs, batch 4, no lr scaling; `sections` update the sections."""
    data: dict[str, Any] = {
        "data": {"batch_size": 4},
        "training": {"epochs": 2, "lr": 0.01, "lr_scaling": False, "warmup_epochs": 0.5, "log_every": 2},
        "checkpoint": {"save_dir": str(save_dir), "run_name": run_name},
        "mlflow": {"enabled": False},
    }
    for section, values in sections.items():
        data[section] = {**data.get(section, {}), **values}
    return MAEConfig.model_validate(data)


def _ddp_main(out_dir: Path) -> None:
    cfg = toy_config(out_dir, run_name="ddp", data={"batch_size": 2}, training={"epochs": 1, "optimizer": "sgd"})
    dist = init_distributed(cfg.distributed)
    rank, world = dist.rank, dist.world_size
    torch.manual_seed(0)
    model = ToyModel()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ddp_model = nn.parallel.DistributedDataParallel(model)
    x, y = toy_data(8, seed=1)
    half = len(x) // world
    loss = ((ddp_model(x[rank * half:(rank + 1) * half]) - y[rank * half:(rank + 1) * half]) ** 2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    del ddp_model  # release its reducer before the process group goes away

    try:
        check_same_config({"value": rank})
        config_mismatch = ""
    except DistributedSetupError as error:
        config_mismatch = str(error)

    n_local = 3 + 2 * rank  # rank-dependent sample counts
    local_values = torch.arange(n_local, dtype=torch.float64) + 10 * rank
    reduced = reduce_metrics({"value": local_values.sum()}, n_local)

    torch.manual_seed(0)
    train_x, train_y = toy_data(12 * (rank + 1), seed=2 + rank)  # rank r: batch size 2(r+1), 6 batches each
    val_x, val_y = toy_data(3 * (rank + 1), seed=20 + rank)
    run_dir = prepare_run_dir(cfg, dist, resuming=False)
    result = Trainer(cfg, ToyModel(), ToyTask(keep_fraction=None),
                     ToyLoader(train_x, train_y, batch_size=2 * (rank + 1)),
                     ToyLoader(val_x, val_y, batch_size=rank + 1, shuffle=False), run_dir, dist).fit()
    if dist.is_main:
        torch.save({"initial": initial, "grads": grads, "reduced": reduced, "world_size": world,
                    "config_mismatch": config_mismatch,
                    "final_metrics": result["final_metrics"]}, out_dir / "ddp.pt")
    wait_for_all_ranks()
    cleanup()


class SignalOnOneRankTask(ToyTask):
    """Rank `rank` sends itself SIGUSR1 in training step `at_step`; the other ranks get no signal."""

    def __init__(self, rank: int, at_step: int) -> None:
        super().__init__()
        self.rank, self.at_step = rank, at_step

    def training_step(self, model: nn.Module, batch: dict[str, torch.Tensor], step: int) -> StepOutput:
        if self.rank == 1 and step == self.at_step:
            os.kill(os.getpid(), signal.SIGUSR1)
        return super().training_step(model, batch, step)


def _preemption_main(out_dir: Path, at_step: int) -> None:
    cfg = toy_config(out_dir, run_name="preempted", training={"epochs": 3}, distributed={"timeout_minutes": 1})
    dist = init_distributed(cfg.distributed)
    torch.manual_seed(0)
    x, y = toy_data(32, seed=2 + dist.rank)
    trainer = Trainer(cfg, ToyModel(), SignalOnOneRankTask(dist.rank, at_step), ToyLoader(x, y, 4), None,
                      prepare_run_dir(cfg, dist, resuming=False), dist)
    try:
        trainer.fit()
        stopped = "finished"
    except Preempted as exc:
        stopped = str(exc)
    (out_dir / f"rank{dist.rank}.json").write_text(json.dumps(
        {"stopped": stopped, "global_step": trainer.state.global_step, "loader": trainer.train_loader.state_dict()}))
    wait_for_all_ranks()
    cleanup()


if __name__ == "__main__":
    if sys.argv[2:3] == ["preempt"]:
        _preemption_main(Path(sys.argv[1]), int(sys.argv[3]))
    else:
        _ddp_main(Path(sys.argv[1]))
