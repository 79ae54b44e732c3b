"""Regression targets (energy, timing, position, angle), their losses, metrics and loss balancing.

Importing this package registers every target in TASK_REGISTRY.
"""
from __future__ import annotations

from lib.config.task_schema import TaskConfig, TasksConfig, parse_tasks
from lib.tasks import angle, energy, position, timing  # noqa: F401  (registers the targets)
from lib.tasks.balancing import BalanceMode, TaskBalancer
from lib.tasks.metrics import by_output, gather_arrays, resolution_metrics, valid_rows
from lib.tasks.registry import TASK_REGISTRY, build_tasks
from lib.tasks.target import SELECTED, RegressionTarget

__all__ = [
    "SELECTED",
    "TASK_REGISTRY",
    "BalanceMode",
    "RegressionTarget",
    "TaskBalancer",
    "TaskConfig",
    "TasksConfig",
    "build_tasks",
    "by_output",
    "gather_arrays",
    "parse_tasks",
    "resolution_metrics",
    "valid_rows",
]
