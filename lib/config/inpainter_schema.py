"""Root config of the dead-channel inpainter (`python -m lib.train_inpainter`, kind `inp`).

The shared sections of lib.config.schema, with the inpainter's own defaults and keys: the model is the
XEC encoder (from an MAE export, frozen or fine-tuned, or from scratch) plus per-face heads; training
masks 5 % of the valid sensors by default, at random or from real dead-channel lists.
"""
from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from lib.config.model_schema import InpainterModelConfig
from lib.config.schema import DataConfig, RunConfig, TrainingConfig


class InpainterDataConfig(DataConfig):
    """Input files and loading, plus the dead-channel lists of real runs."""

    dead_channels: str | None = None
    """Text file of dead sensor ids: one id per line, or one `run id` pair per line for several runs
    (# comments); training.mask_mode dead_pattern / mixed masks each event with one run's list."""


class InpainterTrainingConfig(TrainingConfig):
    """Optimisation and loss of the inpainter, and how its training masks are drawn."""

    mask_ratio: float = Field(0.05, gt=0.0, lt=1.0)
    """Fraction of each event's valid sensors masked at random (mask_mode random, and mixed on top of the
    dead pattern)."""
    mask_mode: Literal["random", "dead_pattern", "mixed"] = "random"
    """random: training.mask_ratio of the valid sensors; dead_pattern: the sensors of one run's list of
    data.dead_channels (those valid in the event); mixed: that pattern plus training.mask_ratio of the other
    valid sensors. Only sensors with truth (valid in the event) are ever masked."""


class InpainterConfig(RunConfig):
    """Root config of inpainter training (`python -m lib.train_inpainter`)."""

    kind: ClassVar[str] = "inp"

    data: InpainterDataConfig = InpainterDataConfig()
    model: InpainterModelConfig = InpainterModelConfig()
    training: InpainterTrainingConfig = InpainterTrainingConfig()

    @model_validator(mode="after")
    def _dead_channels_for_dead_patterns(self) -> InpainterConfig:
        if self.training.mask_mode != "random" and self.data.dead_channels is None:
            raise ValueError(f"training.mask_mode={self.training.mask_mode} draws masks from dead-channel lists: set "
                             "data.dead_channels to a file of dead sensor ids, or use training.mask_mode=random")
        return self
