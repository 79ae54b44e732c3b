"""The run directory: creation rules, resolved config, train.log and training_history.json."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from lib.config import write_resolved
from lib.engine.distributed import DistInfo, broadcast_object
from lib.io.atomic import atomic_write_text, temporary_files
from lib.io.run_files import CHECKPOINT_DIR, CONFIG_NAME, LAST_NAME, LOCK_NAME, LOG_NAME

log = logging.getLogger(__name__)

_LOG_HANDLER_TAG = "_xecmae_run_log"


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (e.g. it exists and this is not a resume)."""


def run_dir_path(cfg: Any) -> Path:
    """save_dir / run_name of a resolved config (no I/O)."""
    if not cfg.checkpoint.run_name:
        raise RunDirError("checkpoint.run_name is empty; resolve the config with lib.config.load_config first")
    return Path(cfg.checkpoint.save_dir) / cfg.checkpoint.run_name


def _refusal(run_dir: Path, cfg: Any, resuming: bool) -> str | None:
    """Why `run_dir` may not be used for this run, or None."""
    if resuming or not run_dir.exists() or not [p for p in run_dir.iterdir() if p.name != LOCK_NAME]:
        return None
    if cfg.checkpoint.auto_resume and not (run_dir / CHECKPOINT_DIR / LAST_NAME).exists():
        log.warning("%s exists without a %s checkpoint; auto_resume starts it from scratch", run_dir, LAST_NAME)
        return None
    return (
        f"run directory {run_dir} already exists and this run is not a resume; nothing was changed. "
        f"Set checkpoint.run_name to a new name, or continue it with "
        f"--resume_from {run_dir / CHECKPOINT_DIR / LAST_NAME} or checkpoint.auto_resume=true"
    )


def attach_log_file(path: Path) -> logging.Handler:
    """Send INFO+ records of the root logger to `path` (replacing the handler of an earlier run)."""
    detach_log_file()
    root = logging.getLogger()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    setattr(handler, _LOG_HANDLER_TAG, True)
    root.addHandler(handler)
    if logging.getLogger("lib").getEffectiveLevel() > logging.INFO:
        logging.getLogger("lib").setLevel(logging.INFO)
    return handler


def detach_log_file() -> None:
    """Stop writing the root logger into a run's train.log (at the end of a run)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, _LOG_HANDLER_TAG, False)]:
        root.removeHandler(handler)
        handler.close()


def _remove_leftover_temporary_files(run_dir: Path) -> None:
    """Delete what atomic writes interrupted by a kill left in the run directory and its checkpoints/."""
    for path in temporary_files(run_dir) + temporary_files(run_dir / CHECKPOINT_DIR):
        size = path.stat().st_size
        path.unlink()
        log.info("removed %s (%d bytes), left by a write that was interrupted", path, size)


def prepare_run_dir(cfg: Any, dist: DistInfo, resuming: bool) -> Path:
    """Create save_dir/run_name on rank 0, write config.yaml and start train.log; returns the path on every rank.

    A new (non-resumed) run into an existing, non-empty directory is refused with RunDirError
    on every rank and nothing is touched. Temporary files of interrupted writes are removed
    (the caller holds the run directory's lock, so no other trainer is writing them).
    """
    run_dir = run_dir_path(cfg)
    refusal = _refusal(run_dir, cfg, resuming) if dist.is_main else None
    refusal = broadcast_object(refusal)
    if refusal:
        raise RunDirError(refusal)
    if dist.is_main:
        (run_dir / CHECKPOINT_DIR).mkdir(parents=True, exist_ok=True)
        attach_log_file(run_dir / LOG_NAME)
        log.info("run directory %s (%s)", run_dir.resolve(), "resumed" if resuming else "new run")
        _remove_leftover_temporary_files(run_dir)
        write_resolved(cfg, run_dir / CONFIG_NAME)
    return run_dir


class TrainingHistory:
    """One record per finished epoch, kept in training_history.json (rewritten atomically on each append)."""

    def __init__(self, path: Path, completed_epochs: int = 0) -> None:
        """Start empty, or keep the records of the first `completed_epochs` epochs of an existing file (resume)."""
        self.path = Path(path)
        self.records: list[dict[str, Any]] = []
        if completed_epochs and self.path.is_file():
            saved = json.loads(self.path.read_text(encoding="utf-8"))
            self.records = [r for r in saved if r["epoch"] <= completed_epochs]

    def append(self, record: dict[str, Any]) -> None:
        """Add one epoch's record and rewrite the file."""
        self.records.append(record)
        atomic_write_text(self.path, json.dumps(self.records, indent=1))
