"""Energy regression: the deposited gamma energy `energyTruth` (GeV)."""
from __future__ import annotations

import numpy as np

from lib.tasks.metrics import half_width_68
from lib.tasks.registry import register_task
from lib.tasks.target import RegressionTarget


@register_task
class EnergyTarget(RegressionTarget):
    """Predicts energyTruth; metrics add the relative resolution sigma_E/E in %."""

    name = "energy"

    def metrics(self, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
        """Bias/RMS/w68 of E (GeV) plus `E_rel_w68_pct`: 68 % half-width of (pred-true)/true in %."""
        out = super().metrics(pred, truth)
        relative_pct = (np.asarray(pred, dtype=np.float64) / np.asarray(truth, dtype=np.float64) - 1.0) * 100.0
        out["E_rel_w68_pct"] = half_width_68(relative_pct[:, 0])
        return out
