"""Checkpoint files: atomic writes, validated loading, RNG capture, pruning and resume lookup.

A checkpoint is a dict with `kind == CHECKPOINT_KIND`; the Trainer fills in model, optimizer,
scheduler, scaler, EMA, per-rank RNG + data positions, counters, best metric, early-stopping
state, MLflow run id, resolved config and schema version.
"""
from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lib.config import flatten_config
from lib.io.atomic import atomic_copy, atomic_write
from lib.io.run_files import LAST_NAME

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


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of our checkpoints onto the CPU; CheckpointError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check checkpoint.resume_from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, dict) or state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is a torch file but not an xecmae checkpoint (no kind={CHECKPOINT_KIND!r})")
    return state


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch with `seed + rank` (distinct random streams per rank)."""
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)


def capture_rng_state(device: torch.device) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA, on a CUDA device) generator states, storable with weights_only."""
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"name": np_name, "keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    """Inverse of `capture_rng_state`."""
    random.setstate(state["python"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
                         np_state["has_gauss"], np_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def check_resume_compatible(checkpoint: Mapping[str, Any], config: Mapping[str, Any], path: Path) -> None:
    """Refuse to resume when the schema version or any model.* field differs from the checkpoint's."""
    saved_config = checkpoint.get("config", {})
    if checkpoint.get("schema_version") != config.get("schema_version"):
        raise CheckpointError(
            f"{path} was written with config schema_version {checkpoint.get('schema_version')}, "
            f"this run uses {config.get('schema_version')}; start a new run instead of resuming"
        )
    saved_model = flatten_config(saved_config.get("model", {}), "model")
    wanted_model = flatten_config(config.get("model", {}), "model")
    keys = saved_model.keys() | wanted_model.keys()
    differing = sorted(k for k in keys if saved_model.get(k) != wanted_model.get(k))
    if differing:
        details = "; ".join(
            f"{k}: checkpoint={saved_model.get(k)!r}, config={wanted_model.get(k)!r}" for k in differing)
        raise CheckpointError(
            f"cannot resume from {path}: the model config differs ({details}); "
            "use the checkpoint's model settings or start a new run"
        )


def prune_epoch_checkpoints(checkpoint_dir: Path, keep_last_n: int) -> list[Path]:
    """Delete all but the newest `keep_last_n` (>= 1) epoch_NNNN.pt files; returns the deleted paths."""
    stale = sorted(Path(checkpoint_dir).glob(EPOCH_PATTERN))[:-keep_last_n]
    for path in stale:
        path.unlink()
    return stale


def find_resume_checkpoint(checkpoint_cfg: Any, run_dir: Path) -> Path | None:
    """Checkpoint to resume from: checkpoint.resume_from, else run_dir/checkpoints/last.pt when auto_resume finds it."""
    if checkpoint_cfg.resume_from:
        path = Path(checkpoint_cfg.resume_from)
        if not path.is_file():
            raise CheckpointError(f"checkpoint.resume_from={path} does not exist; give the path of a .pt checkpoint")
        return path
    if checkpoint_cfg.auto_resume:
        last = Path(run_dir) / "checkpoints" / LAST_NAME
        if last.is_file():
            return last
        log.info("checkpoint.auto_resume: no %s yet, starting from scratch", last)
    return None
