"""What every training entry point does: parse -> resolve -> lock -> validate -> build -> train -> finish -> DONE.

`lib.train_mae` and `lib.train_regressor` differ only in their config root and in the
`build` / `finish` callbacks they pass to `run_training`. Expected failures (bad config,
data, checkpoint or encoder; another trainer holding the run directory) end the process with
a one-paragraph message and exit code 2; a preemption signal or Ctrl-C ends it with
PREEMPTED_EXIT_CODE after last.pt is written; a run gone non-finite or an unexpected error
with exit code 1. The line that says why a run ended is logged before train.log is closed.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from lib.config import ConfigError, parse_args
from lib.data.build import build_loader
from lib.data.files import DataError
from lib.engine.checkpoint import CheckpointError
from lib.engine.checkpoint_manager import CheckpointManager
from lib.engine.distributed import DistInfo, broadcast_object, cleanup, init_distributed, wait_for_all_ranks
from lib.engine.finite import NonFiniteError
from lib.engine.preemption import Preempted
from lib.engine.rng import seed_everything
from lib.engine.run_lock import RunDirLock
from lib.engine.rundir import RunDirError, detach_log_file, prepare_run_dir, run_dir_path
from lib.engine.trainer import Trainer
from lib.io.done_marker import write_done_marker
from lib.io.exit_codes import INTERRUPTED_EXIT_CODE, PREEMPTED_EXIT_CODE, USAGE_ERROR_EXIT_CODE

log = logging.getLogger(__name__)

USAGE_ERRORS = (ConfigError, DataError, CheckpointError, RunDirError)
"""Errors caused by the user's input: reported as a message (no traceback), exit code 2."""

BuildFn = Callable[[Any, DistInfo, Any], tuple[Any, Any]]
FinishFn = Callable[[Any, DistInfo, dict[str, Any], Any, Any], None]


def setup_logging() -> None:
    """INFO to stderr with timestamps (the run directory's train.log is added by prepare_run_dir)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _same_run_name(cfg: Any) -> Any:
    """Give every rank rank 0's run name (a generated default contains a timestamp)."""
    name = broadcast_object(cfg.checkpoint.run_name)
    return cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"run_name": name})})


def run_training(cfg: Any, build: BuildFn, finish: FinishFn) -> dict[str, Any]:
    """Train `cfg`: lock the run directory, validate resume point and data, prepare the run directory, fit,
    `finish`, then write DONE. The lock is held until it returns (or the process dies).

    build(cfg, dist, train_loader) -> (model, task); finish(cfg, dist, result, task, val_loader).
    """
    dist = init_distributed(cfg.distributed)
    lock: RunDirLock | None = None
    try:
        cfg = _same_run_name(cfg)
        lock = RunDirLock(run_dir_path(cfg))
        lock.acquire(dist)  # before anything reads or writes the run directory
        checkpoints = CheckpointManager(cfg, run_dir_path(cfg), dist)  # reads and checks the resume checkpoint
        train_loader = build_loader(cfg, "train", dist.rank, dist.world_size)
        val_loader = build_loader(cfg, "val", dist.rank, dist.world_size)
        seed_everything(cfg.training.seed, dist.rank)
        model, task = build(cfg, dist, train_loader)
        run_dir = prepare_run_dir(cfg, dist, resuming=checkpoints.resuming)
        result = Trainer(cfg, model, task, train_loader, val_loader, run_dir, dist, checkpoints).fit()
        finish(cfg, dist, result, task, val_loader)
        if dist.is_main:
            log.info("training finished: wrote %s", write_done_marker(run_dir))
        wait_for_all_ranks()
        return result
    finally:
        if lock is not None:
            lock.release()
        cleanup()


def main(argv: Sequence[str] | None, root: type, description: str, build: BuildFn, finish: FinishFn,
         extra_flags: dict[str, str] | None = None) -> int:
    """Command-line entry: parse the config, run, and turn expected failures into exit codes."""
    setup_logging()
    cfg, _ = parse_args(argv, root=root, description=description, extra_flags=extra_flags or {})
    try:
        run_training(cfg, build, finish)
        return 0
    except USAGE_ERRORS as exc:
        log.error("%s", exc)
        return USAGE_ERROR_EXIT_CODE
    except NonFiniteError as exc:
        log.error("%s", exc)
        return 1
    except Preempted as exc:
        log.warning("%s", exc)
        return PREEMPTED_EXIT_CODE
    except KeyboardInterrupt:
        log.warning("stopped at once by Ctrl-C; nothing was saved since the last checkpoint")
        return INTERRUPTED_EXIT_CODE
    except Exception:
        log.exception("training stopped by an unexpected error")
        return 1
    finally:
        detach_log_file()
