"""One trainer per run directory: a second real trainer process is refused at once; a killed one locks nobody out."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

from lib import train_mae
from lib.engine import load_checkpoint
from lib.io.run_files import LOCK_NAME
from tests.fixtures_e2e import (  # noqa: F401 (fixtures)
    REPO, E2EData, detach_run_logs, e2e_data, e2e_env, mae_args, one_thread, save_dir,
)

RESUMABLE = ("--set", "checkpoint.auto_resume=true", "--set", "mlflow.enabled=false",
             "--set", "training.num_val_predictions=0")
"""As the job suite starts every run: resume from the run directory's own last.pt when there is one."""


def _trainer_process(args: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "lib.train_mae", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, what: str, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_a_second_trainer_is_refused_and_a_killed_one_locks_nobody_out(e2e_data: E2EData, save_dir, e2e_env):
    args = mae_args(e2e_data, save_dir, "locked", *RESUMABLE)
    run_dir = save_dir / "locked"
    first = _trainer_process([*args, "--epochs", "1000"])
    try:
        _wait_for(lambda: (run_dir / "config.yaml").is_file(), "the first trainer to prepare its run directory")
        assert f"pid {first.pid} on host" in (run_dir / LOCK_NAME).read_text()
        config_written = (run_dir / "config.yaml").stat().st_mtime_ns

        started = time.monotonic()
        second = subprocess.run([sys.executable, "-m", "lib.train_mae", *args, "--epochs", "1000"], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr[-3000:]
        errors = [line for line in second.stderr.splitlines() if " ERROR " in line]
        assert len(errors) == 1 and f"in use by another trainer (pid {first.pid} on host" in errors[0]
        assert time.monotonic() - started < 60 and first.poll() is None
        assert (run_dir / "config.yaml").stat().st_mtime_ns == config_written
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)

    last = run_dir / "checkpoints" / "last.pt"
    epochs_done = load_checkpoint(last)["epoch"] if last.is_file() else 0
    assert train_mae.main([*args, "--epochs", str(max(epochs_done, 1))]) == 0  # the lock died with the first
    detach_run_logs()
    assert (run_dir / "DONE").is_file()


def test_a_save_dir_that_cannot_hold_the_run_is_refused_in_one_line(e2e_data: E2EData, tmp_path, e2e_env, caplog):
    not_a_directory = tmp_path / "save_dir"
    not_a_directory.write_text("a file where the save_dir should be")
    with caplog.at_level(logging.ERROR, logger="lib.engine.run"):
        assert train_mae.main(mae_args(e2e_data, not_a_directory, "run")) == 2
    (message,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert f"cannot create {not_a_directory / 'run' / LOCK_NAME}" in message and "checkpoint.save_dir" in message
