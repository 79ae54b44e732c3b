"""Timing regression: the gamma conversion time `timeTruth` (seconds)."""
from __future__ import annotations

from lib.tasks.base import RegressionTarget, register_task


@register_task
class TimingTarget(RegressionTarget):
    """Predicts timeTruth in seconds (standardization makes the small scale harmless)."""

    name = "timing"
