"""Dead-channel inpainter training: `python -m lib.train_inpainter --config config/inp/inpainter_config.yaml`.

Start from a pretrained MAE encoder with `--mae_checkpoint artifacts/<mae run>/encoder_best.pt` (the same as
`--set model.pretrained_encoder=...`), frozen with `--set model.freeze_encoder=true`; also under
`torchrun --nproc_per_node=N -m lib.train_inpainter ...`. Load the trained inpainter with
lib.recipes.inpainting.load_inpainter(<run>/checkpoints/best.pt).
"""
from __future__ import annotations

import sys
from typing import Sequence

from lib.config import InpainterConfig
from lib.engine.run import main as run_main
from lib.recipes import inpainting

EXTRA_FLAGS = {
    "mae_checkpoint": "model.pretrained_encoder",
    "allow_normalization_mismatch": "model.allow_normalization_mismatch",
    "mask_mode": "training.mask_mode",
    "dead_channels": "data.dead_channels",
}


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run inpainter training; returns the exit code."""
    return run_main(argv, InpainterConfig, "Train the XEC dead-channel inpainter.", inpainting.build,
                    inpainting.finish, EXTRA_FLAGS)


if __name__ == "__main__":
    sys.exit(main())
