"""The root config of each run kind: `mae` (pretraining), `reg` (regressor), `inp` (inpainter)."""
from __future__ import annotations

from lib.config.inpainter_schema import InpainterConfig
from lib.config.schema import MAEConfig, RegressorConfig, RunConfig

ROOTS: dict[str, type[RunConfig]] = {root.kind: root for root in (MAEConfig, RegressorConfig, InpainterConfig)}
"""Run kind -> its root config class (`--kind` of `python -m lib.config`, the job suite's plans)."""
