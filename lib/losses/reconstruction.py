"""MAE reconstruction loss on the randomly masked sensors, per face and channel.

Per face f and predicted channel c, L_fc is the weighted mean of the element-wise
loss over the batch's eligible entries of that face:
  npho: masked sensors (masking only picks npho-valid ones);
  time: masked & time-valid (the loader's time_valid: raw npho >= normalization.npho_threshold),
        with training.time.use_npho_weight weighted by the batch's time_weight (sqrt(raw npho),
        computed by the loader from the raw values; lib.data.stream.TIME_WEIGHT).
The channel loss L_c is the mean of L_fc over the faces with eligible entries, so
every face counts equally however many sensors it has. The total is
sum_c w_c L_c (w = npho_weight / time_weight), or with auto_channel_weight the
learned homoscedastic form sum_c exp(-s_c) w_c L_c + s_c.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lib.geometry import FACE_NAMES, N_SENSORS, SENSOR_FACE
from lib.normalization import CHANNEL_INDEX

ELEMENTWISE_LOSSES = {
    "smooth_l1": lambda pred, target, beta: F.smooth_l1_loss(pred, target, reduction="none", beta=beta),
    "huber": lambda pred, target, beta: F.huber_loss(pred, target, reduction="none", delta=beta),
    "mse": lambda pred, target, beta: F.mse_loss(pred, target, reduction="none"),
    "l1": lambda pred, target, beta: F.l1_loss(pred, target, reduction="none"),
}


class AutoChannelWeight(nn.Module):
    """Learned homoscedastic weighting of channel losses: sum_c exp(-s_c) L_c + s_c (s_c = log-variance)."""

    def __init__(self, n_channels: int):
        super().__init__()
        self.log_vars = nn.Parameter(torch.zeros(n_channels))

    def forward(self, channel_losses: torch.Tensor) -> torch.Tensor:
        return (torch.exp(-self.log_vars) * channel_losses + self.log_vars).sum()


class ReconstructionLoss(nn.Module):
    """forward(pred, x, mask, npho_valid, time_valid, time_weight=None) -> (scalar loss, detached scalar metrics).

    pred (B, 4760, C) in the order of `predict_channels`; x (B, 4760, 2) is the
    original (unmasked) normalized input; masks are (B, 4760) bool; time_weight (B, 4760)
    float, needed with `use_npho_weight` only.
    """

    def __init__(self, *, predict_channels: list[str], loss_fn: str, beta: float, npho_weight: float,
                 time_weight: float, use_npho_weight: bool, auto_channel_weight: bool, track_mae_rmse: bool):
        super().__init__()
        if loss_fn not in ELEMENTWISE_LOSSES:
            raise ValueError(f"training.loss_fn = {loss_fn!r} is unknown; use one of {sorted(ELEMENTWISE_LOSSES)}")
        if loss_fn in ("smooth_l1", "huber") and not beta > 0:
            raise ValueError(f"training.loss_beta = {beta} must be > 0 for loss_fn {loss_fn!r}")
        unknown = [c for c in predict_channels if c not in CHANNEL_INDEX]
        if not predict_channels or unknown or len(set(predict_channels)) != len(predict_channels):
            raise ValueError(f"predict_channels = {predict_channels} must be distinct names from {list(CHANNEL_INDEX)}")
        self.predict_channels = list(predict_channels)
        self.elementwise = ELEMENTWISE_LOSSES[loss_fn]
        self.beta = beta
        self.use_npho_weight = use_npho_weight
        self.track_mae_rmse = track_mae_rmse
        channel_weight = {"npho": npho_weight, "time": time_weight}
        self.register_buffer("channel_weights", torch.tensor([channel_weight[c] for c in self.predict_channels]),
                             persistent=False)
        self.register_buffer("input_channels", torch.tensor([CHANNEL_INDEX[c] for c in self.predict_channels]),
                             persistent=False)
        face_onehot = F.one_hot(torch.tensor(SENSOR_FACE), len(FACE_NAMES)).float()
        self.register_buffer("face_onehot", face_onehot, persistent=False)
        self.auto_weight = AutoChannelWeight(len(self.predict_channels)) if auto_channel_weight else None

    def _entry_weights(self, mask, npho_valid, time_valid, time_weight) -> tuple[torch.Tensor, torch.Tensor]:
        """(eligible (B, N, C) bool, loss weights (B, N, C) float) per predicted channel."""
        masked = mask & npho_valid
        eligible, weights = [], []
        for channel in self.predict_channels:
            selected = masked & time_valid if channel == "time" else masked
            weight = selected.float()
            if channel == "time" and self.use_npho_weight:
                weight = weight * time_weight.float()
            eligible.append(selected)
            weights.append(weight)
        return torch.stack(eligible, dim=-1), torch.stack(weights, dim=-1)

    def _face_means(self, values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Weighted means over batch and sensors per face: ((F, C) means, (F, C) weight totals)."""
        totals = torch.einsum("bnc,nf->fc", weights, self.face_onehot)
        sums = torch.einsum("bnc,nf->fc", values * weights, self.face_onehot)
        return sums / totals.clamp_min(1e-12), totals

    def forward(self, pred, x, mask, npho_valid, time_valid,
                time_weight=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        n_channels = len(self.predict_channels)
        if pred.ndim != 3 or pred.shape[1:] != (N_SENSORS, n_channels) or x.shape[:2] != pred.shape[:2]:
            raise ValueError(
                f"pred must be (B, {N_SENSORS}, {n_channels}) for predict_channels {self.predict_channels} and match "
                f"x (B, {N_SENSORS}, 2); got pred {tuple(pred.shape)}, x {tuple(x.shape)}"
            )
        for name, flags in (("mask", mask), ("npho_valid", npho_valid), ("time_valid", time_valid)):
            if flags.shape != pred.shape[:2] or flags.dtype != torch.bool:
                raise ValueError(f"{name} must be a bool tensor of shape {tuple(pred.shape[:2])}, "
                                 f"got {flags.dtype} {tuple(flags.shape)}")
        if self.use_npho_weight and (time_weight is None or time_weight.shape != pred.shape[:2]):
            raise ValueError(f"training.time.use_npho_weight needs the batch's time_weight of shape "
                             f"{tuple(pred.shape[:2])} (the loader adds it for such a run; see lib.data.build), "
                             f"got {None if time_weight is None else tuple(time_weight.shape)}")
        pred = pred.float()
        target = x.float().index_select(-1, self.input_channels)
        eligible, weights = self._entry_weights(mask, npho_valid, time_valid, time_weight)
        face_losses, face_totals = self._face_means(self.elementwise(pred, target, self.beta), weights)
        has_entries = (face_totals > 0).float()
        channel_losses = (face_losses * has_entries).sum(0) / has_entries.sum(0).clamp_min(1.0)
        weighted = channel_losses * self.channel_weights
        total = weighted.sum() if self.auto_weight is None else self.auto_weight(weighted)

        metrics = {"total_loss": total, "actual_mask_ratio": mask.sum() / npho_valid.sum().clamp_min(1)}
        for c, channel in enumerate(self.predict_channels):
            metrics[f"loss_{channel}"] = channel_losses[c]
        face_totals_weighted = face_losses @ self.channel_weights
        for f, face in enumerate(FACE_NAMES):
            metrics[f"loss_{face}"] = face_totals_weighted[f]
            for c, channel in enumerate(self.predict_channels):
                metrics[f"loss_{face}_{channel}"] = face_losses[f, c]
        if self.track_mae_rmse:
            metrics.update(self._error_metrics(pred - target, eligible.float()))
        return total, {name: value.detach() for name, value in metrics.items()}

    def _error_metrics(self, error: torch.Tensor, eligible: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted MAE / RMSE (normalized units) over the eligible entries, per channel and per face."""
        metrics = {}
        face_abs, _ = self._face_means(error.abs(), eligible)
        face_sq, _ = self._face_means(error.square(), eligible)
        count = eligible.sum(dim=(0, 1)).clamp_min(1.0)
        all_abs = (error.abs() * eligible).sum(dim=(0, 1)) / count
        all_sq = (error.square() * eligible).sum(dim=(0, 1)) / count
        for c, channel in enumerate(self.predict_channels):
            metrics[f"mae_{channel}"] = all_abs[c]
            metrics[f"rmse_{channel}"] = all_sq[c].sqrt()
            for f, face in enumerate(FACE_NAMES):
                metrics[f"mae_{face}_{channel}"] = face_abs[f, c]
                metrics[f"rmse_{face}_{channel}"] = face_sq[f, c].sqrt()
        return metrics
