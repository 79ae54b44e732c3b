"""Timing regression: the gamma conversion time `timeTruth` (seconds)."""
from __future__ import annotations

from lib.tasks.registry import register_task
from lib.tasks.target import RegressionTarget


@register_task
class TimingTarget(RegressionTarget):
    """Predicts timeTruth in seconds (standardization makes the small scale harmless)."""

    name = "timing"
