"""Checkpoint files: atomic writes, validated loading, pruning, resume lookup and the weights to evaluate.

A checkpoint is a dict with `kind == CHECKPOINT_KIND`, "schema_version" and the resolved
"config", "model" (the trained weights), "ema" ({"module": shadow weights} when the run kept an
EMA), the other stateful parts of the run and the train state (see CheckpointManager, which
writes and reads them). Code outside the engine reads a checkpoint through `evaluation_weights`.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from lib.config import migrate_legacy
from lib.config.compatibility import describe_differences, weight_defining_differences
from lib.io.atomic import atomic_copy, atomic_write
from lib.io.run_files import CHECKPOINT_DIR, LAST_NAME

log = logging.getLogger(__name__)

CHECKPOINT_KIND = "xecmae-checkpoint"
EPOCH_PATTERN = "epoch_*.pt"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, not one of ours, or incompatible with the config."""


def epoch_checkpoint_name(epoch: int) -> str:
    """File name of the periodic checkpoint written after (1-based) `epoch`."""
    return f"epoch_{epoch:04d}.pt"


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write `state` to `path` atomically; adds the kind marker."""
    atomic_write(path, lambda tmp: torch.save({**state, "kind": CHECKPOINT_KIND}, tmp))


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Atomically copy an already written checkpoint file."""
    atomic_copy(src, dst)


def read_torch_file(path: Path, label: str, missing_hint: str, mmap: bool = False) -> Any:
    """The content of the torch file at `path` loaded onto the CPU (weights only); CheckpointError naming
    `label` (the flag or key that gave the path) when it is missing (with `missing_hint`) or unreadable."""
    if not path.is_file():
        raise CheckpointError(f"{label} does not exist; {missing_hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:  # torch raises several types for foreign, truncated or corrupt files
        raise CheckpointError(f"{label} is not a readable torch file, truncated or damaged? "
                              f"({type(exc).__name__}: {exc})") from exc


def load_checkpoint(path: str | Path, mmap: bool = False) -> dict[str, Any]:
    """Load one of our checkpoints onto the CPU (`mmap`: map its tensors instead of reading them, for a
    look at a few fields); CheckpointError for anything else."""
    path = Path(path)
    state = read_torch_file(path, f"checkpoint {path}", "check checkpoint.resume_from", mmap=mmap)
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is a torch file but not an xecmae checkpoint (no kind={CHECKPOINT_KIND!r})")
    return state


def evaluation_state(checkpoint: Mapping[str, Any]) -> dict[str, Tensor]:
    """The weights to evaluate of a loaded checkpoint: the EMA shadow when the run kept one, else the model."""
    ema = checkpoint.get("ema")
    return ema["module"] if ema else checkpoint["model"]


def evaluation_weights(path: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """(resolved config, weights to evaluate) of the checkpoint at `path` (see `evaluation_state`)."""
    checkpoint = load_checkpoint(path)
    return checkpoint["config"], evaluation_state(checkpoint)


def prune_epoch_checkpoints(checkpoint_dir: Path, keep_last_n: int) -> list[Path]:
    """Delete all but the newest `keep_last_n` (>= 1) epoch_NNNN.pt files; returns the deleted paths."""
    stale = sorted(Path(checkpoint_dir).glob(EPOCH_PATTERN))[:-keep_last_n]
    for path in stale:
        path.unlink()
    return stale


def find_resume_checkpoint(checkpoint_cfg: Any, run_dir: Path) -> Path | None:
    """Checkpoint to resume from: the run directory's own last.pt once it exists (with checkpoint.resume_from
    or checkpoint.auto_resume), else checkpoint.resume_from, which only seeds a run at its start."""
    last = Path(run_dir) / CHECKPOINT_DIR / LAST_NAME
    if (checkpoint_cfg.resume_from or checkpoint_cfg.auto_resume) and last.is_file():
        if checkpoint_cfg.resume_from and not same_file(checkpoint_cfg.resume_from, last):
            log.info("resuming from this run's own %s; checkpoint.resume_from=%s only seeded its start",
                     last, checkpoint_cfg.resume_from)
        return last
    if checkpoint_cfg.resume_from:
        path = Path(checkpoint_cfg.resume_from)
        if not path.is_file():
            raise CheckpointError(f"checkpoint.resume_from={path} does not exist; give the path of a .pt checkpoint")
        return path
    if checkpoint_cfg.auto_resume:
        log.info("checkpoint.auto_resume: no %s yet, starting from scratch", last)
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when both paths name one existing file."""
    try:
        return Path(a).samefile(b)
    except OSError:
        return False


def in_run_dir(path: Path, run_dir: Path) -> bool:
    """True when the checkpoint `path` lies in `run_dir`'s checkpoints/ directory."""
    return Path(path).resolve().parent == (Path(run_dir) / CHECKPOINT_DIR).resolve()


def check_resume_compatible(checkpoint: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """Refuse (CheckpointError) to resume `checkpoint` under the resolved `config` when the schema version or
    any weight-defining key (lib.config.compatibility) differs; the message names every differing key with
    both values. The checkpoint's config is read as today's schema reads it (legacy keys moved first)."""
    if checkpoint.get("schema_version") != config.get("schema_version"):
        raise CheckpointError(
            f"{path} was written with config schema_version {checkpoint.get('schema_version')}, "
            f"this run uses {config.get('schema_version')}; start a new run instead of resuming"
        )
    saved = copy.deepcopy(dict(checkpoint.get("config", {})))
    migrate_legacy(saved, {})
    differences = weight_defining_differences(saved, config)
    if differences:
        raise CheckpointError(
            f"cannot resume from {path}: settings that define what its weights mean differ (checkpoint -> config: "
            f"{describe_differences(differences)}); resume with the checkpoint's settings, or start a new run "
            "(a new checkpoint.run_name) with these"
        )
