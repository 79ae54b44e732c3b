"""Regression tasks (energy, timing, position, angle), their metrics and loss balancing.

Importing this package registers every task in TASK_REGISTRY.
"""
from __future__ import annotations

from lib.tasks import angle, energy, position, timing  # noqa: F401  (registers the tasks)
from lib.tasks.balancing import BalanceMode, TaskBalancer
from lib.tasks.base import TASK_REGISTRY, RegressionTarget, build_tasks
from lib.config.task_schema import TaskConfig, TasksConfig, parse_tasks
from lib.tasks.metrics import gather_arrays

__all__ = [
    "TASK_REGISTRY",
    "BalanceMode",
    "RegressionTarget",
    "TaskBalancer",
    "TaskConfig",
    "TasksConfig",
    "build_tasks",
    "gather_arrays",
    "parse_tasks",
]
