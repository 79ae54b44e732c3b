"""Per-sample regression losses on standardized targets (the `tasks.<task>.loss` choices)."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def per_sample_loss(kind: str, head_out: Tensor, target_z: Tensor, beta: float) -> Tensor:
    """(B,) loss, the mean over the n outputs of the element-wise `kind` loss.

    head_out (B, n) holds the predicted standardized means, or (B, 2n) means then log-variances
    for gaussian_nll; target_z (B, n) are the standardized targets.
    """
    n = target_z.shape[1]
    mean_z = head_out[:, :n]
    if kind == "smooth_l1":
        per_output = F.smooth_l1_loss(mean_z, target_z, reduction="none", beta=beta)
    elif kind == "l1":
        per_output = F.l1_loss(mean_z, target_z, reduction="none")
    elif kind == "mse":
        per_output = F.mse_loss(mean_z, target_z, reduction="none")
    elif kind == "gaussian_nll":
        per_output = F.gaussian_nll_loss(mean_z, target_z, head_out[:, n:].exp(), reduction="none")
    else:
        raise ValueError(f"unknown regression loss {kind!r}; use smooth_l1, l1, mse or gaussian_nll")
    return per_output.mean(1)


def cosine_loss(vectors: Tensor, unit_targets: Tensor) -> Tensor:
    """(B,) 1 - cos(angle between predicted vectors and unit target vectors)."""
    return 1.0 - F.cosine_similarity(vectors, unit_targets, dim=1)
