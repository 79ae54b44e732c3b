"""Names inside a run directory: the contract between the trainer (lib.engine) and the job suite (jobs/)."""
from __future__ import annotations

CONFIG_NAME = "config.yaml"
"""Resolved config of the run (written at submission and by the trainer)."""
CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"
BEST_NAME = "best.pt"
HISTORY_NAME = "training_history.json"
LOG_NAME = "train.log"
DONE_NAME = "DONE"
"""Marker written when a run finished successfully."""
ENCODER_EXPORT_PATTERN = "encoder_{tag}.pt"
"""MAE encoder exports: tag "best" (best validation) or "last"."""
ENCODER_EXPORT_NAME = ENCODER_EXPORT_PATTERN.format(tag="best")
"""The export a chained regressor starts from."""
