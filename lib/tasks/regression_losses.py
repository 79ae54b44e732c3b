"""Per-sample regression losses (the `tasks.<task>.loss` choices).

smooth_l1 / l1 / mse / gaussian_nll / beta_nll act on standardized targets; the relative losses on the
relative residual (pred - true) / true of physical values (tasks with a positive truth: energy).
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from lib.config.task_schema import RELATIVE_LOSSES, TaskConfig


def per_sample_loss(cfg: TaskConfig, head_out: Tensor, target_z: Tensor) -> Tensor:
    """(B,) loss `cfg.loss` on standardized targets, the mean over the n outputs.

    head_out (B, n) holds the predicted standardized means, or (B, 2n) means then log-variances for
    gaussian_nll and beta_nll; target_z (B, n) are the standardized targets.
    """
    n = target_z.shape[1]
    mean_z = head_out[:, :n]
    if cfg.loss == "smooth_l1":
        per_output = F.smooth_l1_loss(mean_z, target_z, reduction="none", beta=cfg.beta)
    elif cfg.loss == "l1":
        per_output = F.l1_loss(mean_z, target_z, reduction="none")
    elif cfg.loss == "mse":
        per_output = F.mse_loss(mean_z, target_z, reduction="none")
    elif cfg.loss in ("gaussian_nll", "beta_nll"):
        variance = head_out[:, n:].exp()
        per_output = F.gaussian_nll_loss(mean_z, target_z, variance, reduction="none")
        if cfg.loss == "beta_nll":  # Seitzer et al. 2022: weight by the (detached) variance^beta
            per_output = per_output * variance.detach() ** cfg.nll_beta
    else:
        raise ValueError(f"loss {cfg.loss!r} does not act on standardized targets; use relative_loss")
    return per_output.mean(1)


def relative_loss(cfg: TaskConfig, pred: Tensor, truth: Tensor) -> Tensor:
    """(B,) loss `cfg.loss` (relative_l1, relative_smooth_l1 or relative_mse) of r = (pred - truth) / truth, with
    pred and truth (B, n) in physical units (truth > 0), the mean over the n outputs."""
    if cfg.loss not in RELATIVE_LOSSES:
        raise ValueError(f"loss {cfg.loss!r} is not one of the relative losses {RELATIVE_LOSSES}")
    relative = (pred - truth) / truth
    if cfg.loss == "relative_l1":
        per_output = relative.abs()
    elif cfg.loss == "relative_mse":
        per_output = relative**2
    else:
        per_output = F.smooth_l1_loss(relative, relative.new_zeros(()).expand_as(relative), reduction="none",
                                      beta=cfg.relative_beta)
    return per_output.mean(1)


def cosine_loss(vectors: Tensor, unit_targets: Tensor) -> Tensor:
    """(B,) 1 - cos(angle between predicted vectors and unit target vectors)."""
    return 1.0 - F.cosine_similarity(vectors, unit_targets, dim=1)
