"""Inpainter training as a task of the shared engine, its validation predictions, and the trained inpainter
for other code: `load_inpainter(checkpoint).fill(batch, mask)`.

A run masks a few percent of each event's valid sensors (training.mask_mode: at random, from the runs of
data.dead_channels applied to MC on the fly, or both) and learns their npho (and time) from the rest. At
its end it writes the validation events' predictions in physical units, with the mask, the raw inputs
(the truth of the masked sensors), the validity masks, the truth branches, run / event ids and the
baselines' values, to predictions/inpainter_predictions_val.root, and compares it with the baselines
(lib.recipes.masked_sensors: table in the log, metrics.json["masked_sensors"], plots, MLflow).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lib.config import InpainterConfig, load_resolved
from lib.data.build import build_loader
from lib.data.dead_channels import read_dead_channels
from lib.data.stream import RAW_INPUTS, TIME_WEIGHT
from lib.engine import CheckpointError, evaluation_weights
from lib.engine.distributed import DistInfo
from lib.evaluation.units import physical_predictions
from lib.models.inpainter import XECInpainter
from lib.models.masking import EventSeededNoise, inpainting_mask
from lib.recipes.masked_sensors import compare_with_baselines, report_masked_sensors
from lib.recipes.pretrain import MaskedSensorTask, predict_batches, reconstruction_loss, weights_for_predictions
from lib.recipes.transfer import load_pretrained_encoder, write_transfer_report

log = logging.getLogger(__name__)

MODEL_NAME = "inpainter"
PREDICTIONS_NAME = "inpainter_predictions_val.root"
HEADLINE_METRICS = ("total_loss", "loss_npho", "loss_time", "actual_mask_ratio")
"""Metrics drawn as learning curves at the end of a run (the full set is in training_history.json)."""
INPAINTER_PREFIX = "inpainter."
"""Where the XECInpainter sits in the state dict of an inpainter run."""


class InpainterModel(nn.Module):
    """XECInpainter, its training masks and the masked-sensor loss in one module (DDP and the optimizer see
    every parameter). The loss is the MAE's (lib.losses.ReconstructionLoss): on masked sensors with truth only,
    per face averaged."""

    def __init__(self, cfg: InpainterConfig, dead_patterns: np.ndarray | None = None) -> None:
        super().__init__()
        training = cfg.training
        self.inpainter = XECInpainter(cfg.model, cfg.normalization)
        self.loss = reconstruction_loss(cfg)
        self.mask_mode, self.mask_ratio = training.mask_mode, training.mask_ratio
        self.time_mask_ratio_scale = training.time.mask_ratio_scale
        patterns = torch.as_tensor(dead_patterns) if dead_patterns is not None else None
        self.register_buffer("dead_patterns", patterns, persistent=False)

    def forward(self, batch: dict[str, Tensor], noise: EventSeededNoise | None = None
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Mask (randomly, or by `noise`), predict and score one batch: (loss, metrics, {"pred", "mask"})."""
        mask = inpainting_mask(self.mask_mode, batch["npho_valid"], batch["time_valid"], self.mask_ratio,
                               self.time_mask_ratio_scale, self.dead_patterns, noise)
        pred = self.inpainter(batch["x"], batch["npho_valid"], batch["time_valid"], mask)
        loss, metrics = self.loss(pred, batch["x"], mask, batch["npho_valid"], batch["time_valid"],
                                  batch.get(TIME_WEIGHT))
        return loss, metrics, {"pred": pred, "mask": mask}


class InpaintTask(MaskedSensorTask):
    """Engine task of inpainter training; best.pt / last.pt hold the inpainter (see load_inpainter)."""

    def __init__(self, cfg: InpainterConfig, transfer_report: dict[str, Any] | None) -> None:
        self.cfg, self.transfer_report = cfg, transfer_report

    def export(self, model: nn.Module, run_dir: Path, tag: str) -> None:
        """Nothing beyond best.pt / last.pt, which load_inpainter reads."""


def dead_patterns(cfg: InpainterConfig) -> np.ndarray | None:
    """(n_runs, 4760) bool of data.dead_channels (checked; DeadChannelError), None without a list."""
    if cfg.data.dead_channels is None:
        return None
    dead = read_dead_channels(cfg.data.dead_channels)
    if cfg.training.mask_mode == "random":
        log.warning("data.dead_channels=%s is not used: training.mask_mode is random (dead_pattern or mixed use it)",
                    cfg.data.dead_channels)
    else:
        log.info("dead-channel patterns of %d run(s) from %s, %.1f dead sensors per run on average", len(dead.runs),
                 dead.path, np.mean([len(ids) for ids in dead.runs.values()]))
    return dead.patterns()


def build(cfg: InpainterConfig, dist: DistInfo, train_loader: Any) -> tuple[InpainterModel, InpaintTask]:
    """Model (pretrained encoder loaded when model.pretrained_encoder is set) and task of an inpainter run."""
    model = InpainterModel(cfg, dead_patterns(cfg))
    report = None
    if cfg.model.pretrained_encoder:
        report = load_pretrained_encoder(model.inpainter.encoder, cfg.model.pretrained_encoder, cfg.model,
                                         cfg.normalization, cfg.model.allow_normalization_mismatch)
    elif cfg.model.freeze_encoder:
        log.warning("model.freeze_encoder without model.pretrained_encoder: the encoder keeps its random weights")
    return model, InpaintTask(cfg, report)


def write_validation_predictions(cfg: InpainterConfig, checkpoint: Path, weights: dict[str, Tensor], run_dir: Path,
                                 device: torch.device) -> dict[str, Any]:
    """Predictions of the first training.num_val_predictions validation events, each with its fixed validation
    mask, in physical units (pred_<channel>, NaN where not masked) beside the baselines' values on the same
    sensors, the raw inputs, mask, validity masks, truth branches and run / event (the MAE's prediction-file
    layout, lib.evaluation.prediction_files). Returns the masked-sensor metrics, inpainter beside baselines."""
    from lib.evaluation.prediction_files import write_mae_predictions

    model = InpainterModel(cfg, dead_patterns(cfg)).to(device)
    model.load_state_dict(weights)
    loader = build_loader(cfg, "val", 0, 1, extras=RAW_INPUTS)
    arrays = predict_batches(model, loader, cfg.training.num_val_predictions, device)
    channels = list(cfg.model.predict_channels)
    metrics, baseline_fills = compare_with_baselines(arrays, channels, cfg.normalization, MODEL_NAME)
    pred = np.where(arrays["mask"][..., None], arrays["pred"], np.nan)
    inputs = {"x", "npho_valid", "time_valid", "pred", "mask", "run", "event", TIME_WEIGHT, *RAW_INPUTS}
    npho, time = (arrays[name] for name in RAW_INPUTS)
    path = write_mae_predictions(
        run_dir / "predictions" / PREDICTIONS_NAME, run=arrays["run"], event=arrays["event"], npho=npho, time=time,
        npho_valid=arrays["npho_valid"], time_valid=arrays["time_valid"], mask=arrays["mask"], pred=pred,
        truth={k: v for k, v in arrays.items() if k not in inputs}, norm=cfg.normalization,
        metadata={"model": MODEL_NAME, "predict_channels": channels,
                  "mask_mode": cfg.training.mask_mode, "mask_ratio": cfg.training.mask_ratio,
                  "dead_channels": cfg.data.dead_channels, "checkpoint": str(checkpoint),
                  "run_name": cfg.checkpoint.run_name, "split": "val"},
        baselines=baseline_fills,
    )
    log.info("wrote the inpainter's predictions of %d validation events to %s", len(pred), path)
    return metrics


def finish(cfg: InpainterConfig, dist: DistInfo, result: dict[str, Any], task: InpaintTask, val_loader: Any) -> None:
    """Rank 0: transfer report, learning curves, the validation predictions (best weights) and their comparison
    with the neighbour and solid-angle baselines (lib.recipes.masked_sensors: table in the log, metrics.json,
    plots, MLflow)."""
    if not dist.is_main:
        return
    from lib.plots import load_history, plot_learning_curves

    run_dir = Path(result["run_dir"])
    write_transfer_report(run_dir, task.transfer_report)
    history = run_dir / "training_history.json"
    if history.exists():
        plot_learning_curves(load_history(history), run_dir / "plots", HEADLINE_METRICS)
    found = weights_for_predictions(result)
    if val_loader is None or cfg.training.num_val_predictions == 0 or found is None:
        return
    metrics = write_validation_predictions(cfg, *found, run_dir, dist.device)
    report_masked_sensors(cfg, result, metrics, MODEL_NAME)


@dataclass(frozen=True)
class Inpainter:
    """A trained inpainter (its run config and the XECInpainter with its evaluation weights, in eval mode)."""

    cfg: InpainterConfig
    model: XECInpainter
    checkpoint: Path

    @torch.no_grad()
    def fill(self, batch: dict[str, Tensor], mask: Tensor | np.ndarray) -> dict[str, np.ndarray]:
        """{"npho": (B, 4760) photo-electrons[, "time": (B, 4760) seconds]} float32 predicted at the sensors of
        `mask` (B, 4760) bool, NaN elsewhere. `batch` holds x, npho_valid and time_valid as a loader built with
        this inpainter's normalization gives them (inp.cfg: lib.data.build.build_loader); `mask` may hold valid
        sensors (hidden from the model, for evaluation) and invalid ones (dead: filled without truth)."""
        device = self.model.sentinels.device
        mask = torch.as_tensor(mask, dtype=torch.bool, device=device)
        x, npho_valid, time_valid = (batch[key].to(device) for key in ("x", "npho_valid", "time_valid"))
        if mask.shape != npho_valid.shape:
            raise ValueError(f"mask has shape {tuple(mask.shape)}; the batch needs {tuple(npho_valid.shape)}")
        pred = self.model(x, npho_valid, time_valid, mask).float()
        pred = pred.masked_fill(~mask.unsqueeze(-1), float("nan")).cpu().numpy()
        return physical_predictions(pred, self.model.predict_channels, self.cfg.normalization)


def load_inpainter(checkpoint: str | Path, device: str | torch.device = "cpu") -> Inpainter:
    """The inpainter of an inpainter run's checkpoint (best.pt / last.pt; its EMA weights when it kept an EMA),
    on `device`, in eval mode. CheckpointError for a file that is no inpainter checkpoint."""
    checkpoint = Path(checkpoint)
    config, weights = evaluation_weights(checkpoint)
    own = {key[len(INPAINTER_PREFIX):]: value for key, value in weights.items() if key.startswith(INPAINTER_PREFIX)}
    if not own:
        raise CheckpointError(f"{checkpoint} is an xecmae checkpoint without inpainter weights (another run kind); "
                              "give checkpoints/best.pt of a lib.train_inpainter run")
    cfg = load_resolved(config, InpainterConfig)
    model = XECInpainter(cfg.model, cfg.normalization)
    model.load_state_dict(own)
    return Inpainter(cfg, model.to(device).eval(), checkpoint)
