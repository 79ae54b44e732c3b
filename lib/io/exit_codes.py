"""Exit statuses of the training entry points: the contract between the trainer and the job suite."""
from __future__ import annotations

USAGE_ERROR_EXIT_CODE = 2
"""Bad config, data, checkpoint or encoder: fix the input and submit again."""
PREEMPTED_EXIT_CODE = 75
"""Stopped on a preemption signal after writing last.pt: requeue and resume."""
INTERRUPTED_EXIT_CODE = 130
"""Stopped at once by a second Ctrl-C (or one before training started): nothing was saved since the last checkpoint."""
