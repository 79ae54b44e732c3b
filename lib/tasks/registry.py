"""Which regression targets exist: the registry behind the `tasks:` config."""
from __future__ import annotations

from collections.abc import Mapping

from lib.config.task_schema import TASK_SPECS, TaskConfig
from lib.tasks.target import RegressionTarget

TASK_REGISTRY: dict[str, type[RegressionTarget]] = {}


def register_task(cls: type[RegressionTarget]) -> type[RegressionTarget]:
    """Class decorator: make a target selectable by its `name` in the `tasks:` config."""
    if cls.name not in TASK_SPECS:
        raise ValueError(f"task '{cls.name}' has no entry in lib.config.task_schema.TASK_SPECS; add one")
    if cls.name in TASK_REGISTRY:
        raise ValueError(f"task name '{cls.name}' registered twice ({TASK_REGISTRY[cls.name]} and {cls})")
    TASK_REGISTRY[cls.name] = cls
    return cls


def build_tasks(cfg_map: Mapping[str, TaskConfig]) -> dict[str, RegressionTarget]:
    """Instantiate the selected targets (in selection order) from name -> TaskConfig."""
    unknown = [name for name in cfg_map if name not in TASK_REGISTRY]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; known tasks are {sorted(TASK_REGISTRY)}")
    return {name: TASK_REGISTRY[name](cfg) for name, cfg in cfg_map.items()}
