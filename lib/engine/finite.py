"""Non-finite guards: a model with a NaN or infinite weight is never saved and never called good."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import torch
from torch import Tensor

from lib.engine.checkpoint import EPOCH_PATTERN, CheckpointError, load_checkpoint
from lib.io.run_files import BEST_NAME, LAST_NAME


class NonFiniteError(RuntimeError):
    """A loss, gradient, validation metric or weight became NaN or infinite; nothing was saved after it."""


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """True when every floating-point tensor among `tensors` holds only finite values."""
    flags = [torch.isfinite(tensor).all() for tensor in tensors if tensor.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def checkpoint_is_finite(path: Path) -> bool:
    """True when the weights of the checkpoint at `path` (model and EMA) are all finite."""
    state = load_checkpoint(path, mmap=True)
    ema = state.get("ema") or {}
    return all_finite([*state["model"].values(), *ema.get("module", {}).values()])


def last_finite_checkpoint(directory: Path) -> Path | None:
    """The newest checkpoint in `directory` whose weights are verified finite (last.pt, then epoch_NNNN.pt from
    the newest, then best.pt), or None."""
    candidates = [directory / LAST_NAME, *sorted(directory.glob(EPOCH_PATTERN), reverse=True), directory / BEST_NAME]
    for path in candidates:
        try:
            if path.is_file() and checkpoint_is_finite(path):
                return path
        except CheckpointError:
            continue
    return None
