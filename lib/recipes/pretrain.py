"""MAE pretraining as a task of the shared engine: model + loss, steps, encoder export, predictions."""
from __future__ import annotations

import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lib.config import MAEConfig
from lib.data.build import build_loader
from lib.data.stream import RAW_INPUTS, TIME_WEIGHT
from lib.engine import StepOutput, evaluation_weights
from lib.engine.distributed import DistInfo
from lib.io.run_files import ENCODER_EXPORT_PATTERN
from lib.losses import ReconstructionLoss
from lib.models.mae import XECMAE
from lib.models.masking import EventSeededNoise
from lib.recipes.masked_sensors import compare_with_baselines, report_masked_sensors
from lib.recipes.transfer import save_encoder

log = logging.getLogger(__name__)

PREDICTIONS_NAME = "mae_predictions_val.root"
MODEL_NAME = "mae"
"""The MAE's name in the masked-sensor comparison with the inpainting baselines."""
HEADLINE_METRICS = ("total_loss", "loss_npho", "loss_time", "actual_mask_ratio")
"""Metrics drawn as learning curves at the end of a run (the full set is in training_history.json)."""


def reconstruction_loss(cfg: Any) -> ReconstructionLoss:
    """The masked-sensor loss of a run that reconstructs sensors (MAE, inpainter) from its model.predict_channels
    and training section."""
    training = cfg.training
    return ReconstructionLoss(
        predict_channels=cfg.model.predict_channels, loss_fn=training.loss_fn, beta=training.loss_beta,
        npho_weight=training.npho_weight, time_weight=training.time.weight,
        use_npho_weight=training.time.use_npho_weight, auto_channel_weight=training.auto_channel_weight,
        track_mae_rmse=training.track_mae_rmse,
    )


class MAEModel(nn.Module):
    """XECMAE and its reconstruction loss in one module, so DDP and the optimizer see every parameter."""

    def __init__(self, cfg: MAEConfig) -> None:
        super().__init__()
        self.mae = XECMAE(cfg.model, cfg.normalization)
        self.loss = reconstruction_loss(cfg)
        self.mask_ratio = cfg.training.mask_ratio
        self.time_mask_ratio_scale = cfg.training.time.mask_ratio_scale

    def forward(self, batch: dict[str, Tensor], noise: EventSeededNoise | None = None
                ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        """Mask (randomly, or by `noise`), reconstruct and score one batch: (loss, metrics, {"pred", "mask"})."""
        out = self.mae(batch["x"], batch["npho_valid"], batch["time_valid"], self.mask_ratio,
                       self.time_mask_ratio_scale, noise)
        loss, metrics = self.loss(out["pred"], batch["x"], out["mask"], batch["npho_valid"], batch["time_valid"],
                                  batch.get(TIME_WEIGHT))
        return loss, metrics, out


def validation_noise(batch: dict[str, Tensor]) -> EventSeededNoise:
    """The fixed mask noise of validation events: seeded by each event's run and event numbers (by a checksum
    of its inputs where the files hold no run / event branches), so that the validation loss, best.pt and early
    stopping compare epochs on the same masks."""
    if "run" in batch and "event" in batch:
        return EventSeededNoise.from_ids(batch["run"], batch["event"])
    rows = batch["x"].detach().cpu().numpy()
    return EventSeededNoise(torch.tensor([zlib.crc32(row.tobytes()) for row in rows]))


class MaskedSensorTask:
    """The training and validation steps of a model that predicts masked sensors (the MAE, the inpainter):
    model(batch[, noise]) returns (loss, metrics, predictions)."""

    monitor = "total_loss"

    def training_step(self, model: nn.Module, batch: dict[str, Tensor], step: int) -> StepOutput:
        """Masked-sensor loss of one batch."""
        loss, metrics, _ = model(batch)
        return StepOutput(loss, metrics, batch["x"].shape[0])

    def validation_step(self, model: nn.Module, batch: dict[str, Tensor]) -> StepOutput:
        """Same loss on a validation batch, each event with its fixed mask (`validation_noise`)."""
        loss, metrics, _ = model(batch, validation_noise(batch))
        return StepOutput(loss, metrics, batch["x"].shape[0])


class PretrainTask(MaskedSensorTask):
    """Engine task of MAE pretraining; exports the encoder as encoder_<tag>.pt."""

    def __init__(self, cfg: MAEConfig) -> None:
        self.cfg = cfg

    def export(self, model: nn.Module, run_dir: Path, tag: str) -> None:
        """Write encoder_<tag>.pt: encoder weights + the model and normalization config."""
        path = Path(run_dir) / ENCODER_EXPORT_PATTERN.format(tag=tag)
        save_encoder(model.mae.encoder, self.cfg.model, self.cfg.normalization, path,
                     source={"run_name": self.cfg.checkpoint.run_name, "tag": tag})
        log.info("exported %s", path)


def build(cfg: MAEConfig, dist: DistInfo, train_loader: Any) -> tuple[MAEModel, PretrainTask]:
    """Model and task of an MAE run."""
    return MAEModel(cfg), PretrainTask(cfg)


def weights_for_predictions(result: dict[str, Any]) -> tuple[Path, dict[str, Tensor]] | None:
    """(checkpoint, evaluation weights) of a finished run's result: best.pt, else last.pt; None without either."""
    path = result.get("best_checkpoint") or result.get("last_checkpoint")
    if path is None or not Path(path).is_file():
        return None
    return Path(path), evaluation_weights(path)[1]


@torch.no_grad()
def predict_batches(model: MAEModel, loader: Any, max_events: int, device: torch.device) -> dict[str, np.ndarray]:
    """Masked reconstructions (with the validation masks) of the first `max_events` events of `loader` as numpy
    arrays."""
    model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    loader.set_epoch(0)
    seen = 0
    for batch in loader:
        if seen >= max_events:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        _, _, out = model(batch, validation_noise(batch))
        take = min(max_events - seen, batch["x"].shape[0])
        for key, value in {**batch, **out}.items():
            parts.setdefault(key, []).append(value[:take].cpu().numpy())
        seen += take
    return {k: np.concatenate(v) for k, v in parts.items()}


def finish(cfg: MAEConfig, dist: DistInfo, result: dict[str, Any], task: PretrainTask, val_loader: Any) -> None:
    """Rank 0: learning curves, and reconstructions (best weights) of the first training.num_val_predictions
    validation events, in physical units beside their raw inputs."""
    if not dist.is_main:
        return
    from lib.plots import load_history, plot_learning_curves

    history = Path(result["run_dir"]) / "training_history.json"
    if history.exists():
        plot_learning_curves(load_history(history), Path(result["run_dir"]) / "plots", HEADLINE_METRICS)
    n = cfg.training.num_val_predictions
    if val_loader is None or n == 0:
        return
    found = weights_for_predictions(result)
    if found is None:
        return
    checkpoint, weights = found
    from lib.evaluation.prediction_files import write_mae_predictions

    model = MAEModel(cfg).to(dist.device)
    model.load_state_dict(weights)
    arrays = predict_batches(model, build_loader(cfg, "val", 0, 1, extras=RAW_INPUTS), n, dist.device)
    channels = list(cfg.model.predict_channels)
    metrics, baseline_fills = compare_with_baselines(arrays, channels, cfg.normalization, MODEL_NAME)
    inputs = {"x", "npho_valid", "time_valid", "pred", "mask", "run", "event", TIME_WEIGHT, *RAW_INPUTS}
    npho, time = (arrays[name] for name in RAW_INPUTS)
    path = write_mae_predictions(
        Path(result["run_dir"]) / "predictions" / PREDICTIONS_NAME,
        run=arrays["run"], event=arrays["event"], npho=npho, time=time, npho_valid=arrays["npho_valid"],
        time_valid=arrays["time_valid"], mask=arrays["mask"], pred=arrays["pred"],
        truth={k: v for k, v in arrays.items() if k not in inputs}, norm=cfg.normalization,
        metadata={"predict_channels": channels, "checkpoint": str(checkpoint),
                  "run_name": cfg.checkpoint.run_name, "split": "val"},
        baselines=baseline_fills,
    )
    log.info("wrote %d validation reconstructions to %s", len(arrays["x"]), path)
    report_masked_sensors(cfg, result, metrics, MODEL_NAME)
