"""Regressor fine-tuning: `python -m lib.train_regressor --config config/reg/train_config.yaml [overrides]`.

Start from a pretrained MAE encoder with `--pretrained_encoder artifacts/<mae run>/encoder_best.pt`;
also under `torchrun --nproc_per_node=N -m lib.train_regressor ...`.
"""
from __future__ import annotations

import sys
from typing import Sequence

from lib.config import RegressorConfig
from lib.engine.run import main as run_main
from lib.recipes import finetune

EXTRA_FLAGS = {
    "pretrained_encoder": "model.pretrained_encoder",
    "allow_normalization_mismatch": "model.allow_normalization_mismatch",
    "tasks": "tasks",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run regressor fine-tuning; returns the exit code."""
    return run_main(argv, RegressorConfig, "Fine-tune the XEC regressor (energy, timing, position, angle).",
                    finetune.build, finetune.finish, EXTRA_FLAGS)


if __name__ == "__main__":
    sys.exit(main())
