"""Position regression: the first-interaction point `uvwTruth` (cm; u = z, v = arc on the inner face, w = depth)."""
from __future__ import annotations

import numpy as np

from lib.tasks.metrics import quantile_68
from lib.tasks.registry import register_task
from lib.tasks.target import RegressionTarget


@register_task
class PositionTarget(RegressionTarget):
    """Predicts (u, v, w); metrics add the 68 % quantile of the 3-D distance."""

    name = "position"

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Per-coordinate bias/RMS/w68 (cm) plus `dist3d_68`: 68.27th percentile of |pred - true| (cm)."""
        out = super().metrics(pred, truth)
        distance = np.linalg.norm(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64), axis=1)
        out["dist3d_68"] = quantile_68(distance)
        return out
