"""The regression-task interface: targets, standardization, losses, predictions and metrics.

A task is a small nn.Module holding only buffers (standardization and reweighting state),
so registering the tasks in the regressor (nn.ModuleDict) stores that state in every
checkpoint and moves it to the model's device. Heads are built by the model from
`head_dim`, `cfg.head_hidden` and `cfg.head_layers`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lib.config.task_schema import TASK_SPECS, TaskConfig, check_task_config
from lib.tasks.metrics import residual_summary

log = logging.getLogger(__name__)

Batch = Mapping[str, Tensor]

TASK_REGISTRY: dict[str, type[RegressionTarget]] = {}


def register_task(cls: type[RegressionTarget]) -> type[RegressionTarget]:
    """Class decorator: make a task selectable by its `name` in the `tasks:` config.

    Truth key, output names and units come from the task's entry in TASK_SPECS.
    """
    if cls.name not in TASK_SPECS:
        raise ValueError(f"task '{cls.name}' has no entry in lib.config.task_schema.TASK_SPECS; add one")
    spec = TASK_SPECS[cls.name]
    cls.truth_keys, cls.output_names, cls.units = (spec.truth_key,), spec.output_names, spec.units
    if cls.name in TASK_REGISTRY:
        raise ValueError(f"task name '{cls.name}' registered twice ({TASK_REGISTRY[cls.name]} and {cls})")
    TASK_REGISTRY[cls.name] = cls
    return cls


class RegressionTarget(nn.Module):
    """One regression target: subclasses set the class attributes and override where needed."""

    name: ClassVar[str]
    truth_keys: ClassVar[tuple[str, ...]]
    output_names: ClassVar[tuple[str, ...]]
    units: ClassVar[tuple[str, ...]]

    def __init__(self, cfg: TaskConfig):
        super().__init__()
        check_task_config(self.name, cfg)
        self.cfg = cfg
        n = self.n_outputs
        self.register_buffer("target_mean", torch.tensor(cfg.target_mean or [0.0] * n, dtype=torch.float64))
        self.register_buffer("target_scale", torch.tensor(cfg.target_scale or [1.0] * n, dtype=torch.float64))
        self.register_buffer("fitted", torch.tensor(not self.needs_fit(cfg)))
        if cfg.reweight_bins is not None:
            self.register_buffer("reweight_edges", torch.zeros(n, cfg.reweight_bins + 1, dtype=torch.float64))
            self.register_buffer("reweight_table", torch.zeros(n, cfg.reweight_bins, dtype=torch.float64))
        self._fitted_checked = False

    @classmethod
    def needs_fit(cls, cfg: TaskConfig) -> bool:
        """Whether fit_standardization must see training targets before loss/predict."""
        return cfg.target_mean is None or cfg.reweight_bins is not None

    @property
    def n_outputs(self) -> int:
        return len(self.output_names)

    @property
    def head_dim(self) -> int:
        """Width of the head output: the means, plus one log-variance per output for gaussian_nll."""
        return 2 * self.n_outputs if self.cfg.loss == "gaussian_nll" else self.n_outputs

    # --- targets -----------------------------------------------------------------------------
    def target(self, batch: Batch) -> Tensor:
        """Truth in physical units, shape (B, n_outputs)."""
        truth = batch[self.truth_keys[0]]
        return truth.reshape(truth.shape[0], -1)

    def valid(self, batch: Batch) -> Tensor:
        """(B,) bool: False where any truth value of this task is NaN/inf (skip and count those)."""
        checks = [torch.isfinite(batch[key].reshape(batch[key].shape[0], -1)).all(1) for key in self.truth_keys]
        return torch.stack(checks, 0).all(0)

    # --- standardization and reweighting --------------------------------------------------------
    @torch.no_grad()
    def fit_standardization(self, targets: Tensor) -> None:
        """Fit, from training targets (N, n_outputs) in physical units, the target mean/scale
        (unless given in the config) and the reweighting histogram (if reweight_bins is set).
        Rows with non-finite values are ignored."""
        targets = torch.as_tensor(targets, dtype=torch.float64).reshape(len(targets), -1)
        if targets.shape[1] != self.n_outputs:
            raise ValueError(f"task '{self.name}': targets have {targets.shape[1]} columns, expected {self.n_outputs}")
        finite = targets[torch.isfinite(targets).all(1)].to(self.target_mean.device)
        if len(finite) < 2:
            raise ValueError(f"task '{self.name}': need >= 2 finite training targets to fit, got {len(finite)}")
        if self.cfg.target_mean is None:
            scale = finite.std(0)
            if not bool((scale > 0).all()):
                raise ValueError(
                    f"task '{self.name}': training targets are constant in {self.output_names} (std {scale.tolist()}); "
                    "set tasks.<task>.target_mean/target_scale explicitly"
                )
            self.target_mean.copy_(finite.mean(0))
            self.target_scale.copy_(scale)
        if self.cfg.reweight_bins is not None:
            self._fit_reweighting(finite)
        self.fitted.fill_(True)
        log.info("task %s: target mean %s, scale %s", self.name, self.target_mean.tolist(), self.target_scale.tolist())

    def _fit_reweighting(self, targets: Tensor) -> None:
        for i in range(self.n_outputs):
            low, high = targets[:, i].min(), targets[:, i].max()
            self.reweight_edges[i] = torch.linspace(float(low), float(high), self.cfg.reweight_bins + 1)
            counts = torch.bincount(self._bin_index(targets, i), minlength=self.cfg.reweight_bins)
            self.reweight_table[i] = 1.0 / counts.clamp(min=1).double()
        self.reweight_table[0] /= self._inverse_histogram_weights(targets).mean()

    def _bin_index(self, targets: Tensor, output: int) -> Tensor:
        edges = self.reweight_edges[output]
        return torch.bucketize(targets[:, output].to(edges.dtype).contiguous(), edges[1:-1].contiguous())

    def sample_weights(self, targets: Tensor) -> Tensor:
        """(B,) inverse-histogram weights of targets (B, n_outputs): the product over outputs of
        1/count of the target's bin, normalised to mean 1 on the training data."""
        self._require_fitted()
        return self._inverse_histogram_weights(targets).float()

    def _inverse_histogram_weights(self, targets: Tensor) -> Tensor:
        weights = torch.ones(len(targets), dtype=torch.float64, device=targets.device)
        for i in range(self.n_outputs):
            weights = weights * self.reweight_table[i][self._bin_index(targets, i)]
        return weights

    def _require_fitted(self) -> None:
        if self._fitted_checked:
            return
        if not bool(self.fitted):
            raise RuntimeError(
                f"task '{self.name}': not fitted; call fit_standardization(training targets) first "
                "(needed unless tasks.<task>.target_mean/target_scale are set and reweight_bins is not)"
            )
        self._fitted_checked = True

    def standardize(self, targets: Tensor) -> Tensor:
        """Physical units -> standardized float32."""
        self._require_fitted()
        return ((targets.double() - self.target_mean) / self.target_scale).float()

    def destandardize(self, values: Tensor) -> Tensor:
        """Standardized -> physical units (float64 keeps small scales such as seconds exact)."""
        self._require_fitted()
        return values.double() * self.target_scale + self.target_mean

    # --- loss and prediction -----------------------------------------------------------------------
    def loss(self, head_out: Tensor, batch: Batch) -> Tensor:
        """(B,) per-sample loss on standardized targets, mean over outputs, reweighting applied;
        0 where valid() is False (those rows never reach the gradient)."""
        self._check_head(head_out)
        valid = self.valid(batch)
        target = self.target(batch)
        safe_target = torch.where(valid[:, None], target, self.target_mean.to(target.dtype))
        per_sample = self._per_sample_loss(head_out.float(), safe_target, batch, valid)
        if self.cfg.reweight_bins is not None:
            per_sample = per_sample * self.sample_weights(safe_target)
        return torch.where(valid, per_sample, torch.zeros_like(per_sample))

    def _per_sample_loss(self, head_out: Tensor, safe_target: Tensor, batch: Batch, valid: Tensor) -> Tensor:
        """(B,) loss before reweighting; targets of invalid rows are already replaced by safe values."""
        target_z = self.standardize(safe_target)
        mean_z = head_out[:, : self.n_outputs]
        loss = self.cfg.loss
        if loss == "smooth_l1":
            per_output = F.smooth_l1_loss(mean_z, target_z, reduction="none", beta=self.cfg.beta)
        elif loss == "l1":
            per_output = F.l1_loss(mean_z, target_z, reduction="none")
        elif loss == "mse":
            per_output = F.mse_loss(mean_z, target_z, reduction="none")
        else:
            variance = head_out[:, self.n_outputs :].exp()
            per_output = F.gaussian_nll_loss(mean_z, target_z, variance, reduction="none")
        return per_output.mean(1)

    def _check_head(self, head_out: Tensor) -> None:
        if head_out.ndim != 2 or head_out.shape[1] != self.head_dim:
            raise ValueError(f"task '{self.name}': head output {tuple(head_out.shape)}, expected (B, {self.head_dim})")

    def predict(self, head_out: Tensor) -> Tensor:
        """(B, n_outputs) predictions in physical units (float64)."""
        self._check_head(head_out)
        return self.destandardize(head_out[:, : self.n_outputs])

    def predict_sigma(self, head_out: Tensor) -> Tensor:
        """(B, n_outputs) predicted standard deviation in physical units (gaussian_nll only)."""
        if self.cfg.loss != "gaussian_nll":
            raise ValueError(f"task '{self.name}': predict_sigma needs loss: gaussian_nll (got {self.cfg.loss})")
        self._require_fitted()
        return (0.5 * head_out[:, self.n_outputs :].double()).exp() * self.target_scale

    # --- metrics -----------------------------------------------------------------------------
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


def build_tasks(cfg_map: Mapping[str, TaskConfig]) -> dict[str, RegressionTarget]:
    """Instantiate the selected tasks (in selection order) from name -> TaskConfig."""
    unknown = [name for name in cfg_map if name not in TASK_REGISTRY]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks are {sorted(TASK_REGISTRY)}")
    return {name: TASK_REGISTRY[name](cfg) for name, cfg in cfg_map.items()}
