"""MAE pretraining: `python -m lib.train_mae --config config/mae/mae_config.yaml [overrides]`.

Also under `torchrun --nproc_per_node=N -m lib.train_mae ...` (same behaviour, faster).
"""
from __future__ import annotations

import sys
from typing import Sequence

from lib.config import MAEConfig
from lib.engine.run import main as run_main
from lib.recipes import pretrain


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run MAE pretraining; returns the exit code."""
    return run_main(argv, MAEConfig, "Pretrain the XEC masked autoencoder.", pretrain.build,
                    pretrain.finish)


if __name__ == "__main__":
    sys.exit(main())
