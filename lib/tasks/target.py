"""A regression target: its truth, validity, loss, predictions and resolution metrics.

A target is a small nn.Module whose only state is its standardizer (and reweighting
histogram), so registering the targets in the regressor (nn.ModuleDict) stores that state in
every checkpoint and moves it to the model's device. What a target is (truth branch, output
names, units) comes from lib.config.task_schema.TASK_SPECS; heads are built by the model from
`head_dim`, `cfg.head_hidden` and `cfg.head_layers`.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from lib.config.task_schema import RELATIVE_LOSSES, TASK_SPECS, VARIANCE_LOSSES, TaskConfig, check_task_config
from lib.tasks.metrics import residual_summary, valid_rows
from lib.tasks.regression_losses import per_sample_loss, relative_loss
from lib.tasks.reweighting import InverseHistogramWeights
from lib.tasks.standardizer import Standardizer

Batch = Mapping[str, Tensor]
SELECTED = "selected"
"""Optional batch column (B,) bool: events a training step may learn from (e.g. inside the fiducial
volume); an event outside is skipped by every task like one with invalid truth."""

_LEGACY_STATE_KEYS = {
    "target_mean": "standardizer.mean", "target_scale": "standardizer.scale", "fitted": "standardizer.fitted",
    "reweight_edges": "reweighting.edges", "reweight_table": "reweighting.table",
}
"""State-dict keys of the targets in checkpoints written before the standardizer became a submodule."""


class RegressionTarget(nn.Module):
    """One regression target; subclasses set `name` and override metrics or the loss where needed."""

    name: ClassVar[str]

    def __init__(self, cfg: TaskConfig):
        super().__init__()
        check_task_config(self.name, cfg)
        spec = TASK_SPECS[self.name]
        self.cfg = cfg
        self.truth_keys: tuple[str, ...] = (spec.truth_key,)
        self.output_names, self.units = spec.output_names, spec.units
        self.standardizer = Standardizer(self.name, self.n_outputs, cfg.target_mean, cfg.target_scale)
        bins = cfg.reweight_bins
        self.reweighting = InverseHistogramWeights(self.n_outputs, bins) if bins is not None else None

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    @property
    def head_dim(self) -> int:
        """Width of the head output: the means, plus one log-variance per output for gaussian_nll / beta_nll."""
        return 2 * self.n_outputs if self.predicts_sigma else self.n_outputs

    @property
    def predicts_sigma(self) -> bool:
        """Whether the head predicts a variance too (gaussian_nll, beta_nll), so that `predict_sigma` works."""
        return self.cfg.loss in VARIANCE_LOSSES

    @property
    def _needs_positive_truth(self) -> bool:
        return self.cfg.log_target or self.cfg.loss in RELATIVE_LOSSES

    @property
    def needs_fit(self) -> bool:
        """Whether `fit` must see training targets before loss / predict."""
        return not self.standardizer.configured or self.reweighting is not None

    # --- truth ---------------------------------------------------------------------------------
    def target(self, batch: Batch) -> Tensor:
        """Truth in physical units, shape (B, n_outputs)."""
        truth = batch[self.truth_keys[0]]
        return truth.reshape(truth.shape[0], -1)

    def valid(self, batch: Batch) -> Tensor:
        """(B,) bool: False where any truth value of this target is NaN, inf or a fill value
        (|x| > 9e9), not positive where the log target or a relative loss needs it, or where the
        batch's SELECTED column (if any) is False: those events are skipped by this task and counted."""
        checks = [valid_rows(batch[key]) for key in self.truth_keys]
        if self._needs_positive_truth:  # log E and (pred - E) / E need E > 0
            checks.append((self.target(batch) > 0).all(1))
        if SELECTED in batch:
            checks.append(batch[SELECTED].bool())
        return torch.stack(checks, 0).all(0)

    @torch.no_grad()
    def fit(self, targets: Tensor) -> None:
        """Fit the standardization (unless configured) and the reweighting (if enabled) on training
        targets (N, n_outputs) in physical units; rows with NaN, inf or fill values are ignored."""
        targets = torch.as_tensor(targets, dtype=torch.float64).reshape(len(targets), -1)
        if targets.shape[1] != self.n_outputs:
            raise ValueError(f"task '{self.name}': targets have {targets.shape[1]} columns, expected {self.n_outputs}")
        usable = valid_rows(targets)
        if self._needs_positive_truth:
            usable &= (targets > 0).all(1)
        finite = targets[usable].to(self.standardizer.mean.device)
        if len(finite) < 2:
            raise ValueError(f"task '{self.name}': need >= 2 valid training targets to fit (not NaN, inf or a fill "
                             f"value above 9e9{', and > 0' if self._needs_positive_truth else ''}), got "
                             f"{len(finite)} of {len(targets)}")
        self.standardizer.fit(self._to_standardized_space(finite))
        if self.reweighting is not None:
            self.reweighting.fit(finite)

    # --- loss and prediction ---------------------------------------------------------------------
    def loss(self, head_out: Tensor, batch: Batch) -> Tensor:
        """(B,) per-sample loss, reweighted when enabled; 0 where valid() is False (those rows never
        reach the gradient)."""
        self._check_head(head_out)
        valid = self.valid(batch)
        target = self.target(batch)
        safe_value = self._from_standardized_space(self.standardizer.mean)  # a valid truth for the skipped rows
        safe_target = torch.where(valid[:, None], target, safe_value.to(target.dtype))
        per_sample = self._unweighted_loss(head_out.float(), safe_target, batch, valid)
        if self.reweighting is not None:
            self.standardizer.require_fitted()
            per_sample = per_sample * self.reweighting(safe_target)
        return torch.where(valid, per_sample, torch.zeros_like(per_sample))

    def _unweighted_loss(self, head_out: Tensor, safe_target: Tensor, batch: Batch, valid: Tensor) -> Tensor:
        """(B,) loss before reweighting; targets of invalid rows are already replaced by safe values."""
        if self.cfg.loss in RELATIVE_LOSSES:
            pred = self._physical(head_out[:, : self.n_outputs])
            return relative_loss(self.cfg, pred, safe_target.double()).float()
        target_z = self.standardizer.standardize(self._to_standardized_space(safe_target))
        return per_sample_loss(self.cfg, head_out, target_z)

    def _to_standardized_space(self, physical: Tensor) -> Tensor:
        """What the standardizer sees: log of the physical values with log_target, else the values themselves."""
        return physical.double().log() if self.cfg.log_target else physical

    def _from_standardized_space(self, values: Tensor) -> Tensor:
        return values.exp() if self.cfg.log_target else values

    def _physical(self, mean_z: Tensor) -> Tensor:
        """Standardized means (B, n) -> predictions in physical units (float64)."""
        return self._from_standardized_space(self.standardizer.destandardize(mean_z))

    def _check_head(self, head_out: Tensor) -> None:
        if head_out.ndim != 2 or head_out.shape[1] != self.head_dim:
            raise ValueError(f"task '{self.name}': head output {tuple(head_out.shape)}, expected (B, {self.head_dim})")

    def predict(self, head_out: Tensor) -> Tensor:
        """(B, n_outputs) predictions in physical units (float64)."""
        self._check_head(head_out)
        return self._physical(head_out[:, : self.n_outputs])

    def predict_sigma(self, head_out: Tensor) -> Tensor:
        """(B, n_outputs) predicted standard deviation in physical units (gaussian_nll / beta_nll); with
        log_target the predicted sigma of log E times the predicted E (to first order)."""
        if not self.predicts_sigma:
            raise ValueError(f"task '{self.name}': predict_sigma needs loss gaussian_nll or beta_nll "
                             f"(got {self.cfg.loss})")
        self.standardizer.require_fitted()
        sigma = (0.5 * head_out[:, self.n_outputs :].double()).exp() * self.standardizer.scale
        return sigma * self.predict(head_out) if self.cfg.log_target else sigma

    # --- metrics -----------------------------------------------------------------------------------
    def residuals(self, pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
        """pred - truth, (N, n_outputs)."""
        return pred - truth

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Bias / RMS / 68 % half-width per output in physical units (`{output}_{stat}` keys).
        pred and truth: (N, n_outputs) numpy arrays of valid events gathered from all ranks."""
        pred, truth = np.asarray(pred, dtype=np.float64), np.asarray(truth, dtype=np.float64)
        expected = (len(truth), self.n_outputs)
        if pred.shape != expected or truth.ndim != 2:
            raise ValueError(f"task '{self.name}': pred {pred.shape} and truth {truth.shape} must both be {expected}")
        residuals = self.residuals(pred, truth)
        out: dict[str, float] = {}
        for i, output in enumerate(self.output_names):
            out.update(residual_summary(residuals[:, i], output))
        return out

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for old, new in _LEGACY_STATE_KEYS.items():
            if prefix + old in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
