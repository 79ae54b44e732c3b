"""Emission-angle regression: `emiAng` (theta, phi) in degrees, or the unit vector `emiVec`.

With use_vector the head predicts a 3-vector trained with a cosine loss against emiVec;
predictions are still returned as (theta, phi) degrees so metrics are the same either way.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lib.config.task_schema import TASK_SPECS, TaskConfig
from lib.geometry.coordinates import unit_vectors_to_angles
from lib.tasks.regression_losses import cosine_loss
from lib.tasks.metrics import opening_angles_deg, quantile_68, wrap_degrees
from lib.tasks.registry import register_task
from lib.tasks.target import Batch, RegressionTarget

_VECTOR_DIM = 3


@register_task
class AngleTarget(RegressionTarget):
    """Predicts (theta, phi); metrics wrap the phi residual and add the opening-angle 68 % quantile."""

    name = "angle"

    def __init__(self, cfg: TaskConfig):
        super().__init__(cfg)
        if cfg.use_vector:
            self.truth_keys = (*self.truth_keys, TASK_SPECS[self.name].vector_key)

    @property
    def needs_fit(self) -> bool:
        if self.cfg.use_vector:  # the vector is not standardized
            return self.reweighting is not None
        return super().needs_fit

    @property
    def head_dim(self) -> int:
        return _VECTOR_DIM if self.cfg.use_vector else super().head_dim

    def _unweighted_loss(self, head_out: Tensor, safe_target: Tensor, batch: Batch, valid: Tensor) -> Tensor:
        if not self.cfg.use_vector:
            return super()._unweighted_loss(head_out, safe_target, batch, valid)
        fallback = torch.tensor([0.0, 0.0, 1.0], device=head_out.device)
        truth_vector = torch.where(valid[:, None], batch["emiVec"].float(), fallback)
        return cosine_loss(head_out, truth_vector)

    def predict(self, head_out: Tensor) -> Tensor:
        if not self.cfg.use_vector:
            return super().predict(head_out)
        self._check_head(head_out)
        theta, phi = unit_vectors_to_angles(head_out.double())
        return torch.stack([theta, phi], 1)

    def residuals(self, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """pred - truth with the phi residual wrapped into [-180, 180)."""
        residuals = pred - truth
        residuals[:, 1] = wrap_degrees(residuals[:, 1])
        return residuals

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """theta/phi bias/RMS/w68 (deg) plus `opening_68_deg`: 68.27th percentile of the opening angle."""
        out = super().metrics(pred, truth)
        out["opening_68_deg"] = quantile_68(
            opening_angles_deg(np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64))
        )
        return out
