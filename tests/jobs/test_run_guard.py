"""What a submission checks before it writes into a run directory (local executor, no SLURM): FORCE=1 only
with a config that keeps the weights' meaning, a writable save_dir, a time limit that leaves time to
train, one submission at a time; TIME=0 means no limit; status names the trainer's own error first."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STANDIN = "tests.slurm.standin_trainer"


def _finished_run(workspace, submit) -> Path:
    assert submit(["mae", workspace["mae"], "--entry", STANDIN])[0] == 0
    return workspace["runs"] / "pre"


def _snapshot(run_dir: Path) -> dict[str, tuple[bytes, int]]:
    return {str(path.relative_to(run_dir)): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(run_dir.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("dry_run", [True, False])
def test_force_with_a_config_that_changes_the_weights_is_refused_before_anything_is_written(workspace, submit,
                                                                                            dry_run):
    run_dir = _finished_run(workspace, submit)
    before = _snapshot(run_dir)
    changes = ["--set", "model.encoder_dim=128", "--set", "training.mask_ratio=0.75", "--set", "training.epochs=5"]
    code, _, err = submit(["mae", workspace["mae"], *changes, "--force", *(["--dry-run"] if dry_run else [])])
    assert code == 2
    assert "model.encoder_dim: 64 -> 128" in err and "training.mask_ratio: 0.6 -> 0.75" in err
    assert "training.epochs" not in err  # more epochs do not change what the weights mean
    assert "another RUN_NAME" in err and len(err.strip().splitlines()) == 1
    assert _snapshot(run_dir) == before  # DONE, config.yaml, checkpoints: untouched


def test_force_with_a_compatible_config_continues_the_run(workspace, submit):
    run_dir = _finished_run(workspace, submit)
    code, _, err = submit(["mae", workspace["mae"], "--set", "training.epochs=5", "--set", "training.lr=1e-3",
                           "--force", "--entry", STANDIN])
    assert code == 0, err
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["training"]["epochs"] == 5
    assert (run_dir / "starts.txt").read_text().split() == ["0", "3"]  # resumed from its own last step
    assert (run_dir / "DONE").exists()


@pytest.fixture
def read_only_dir(tmp_path):
    """An empty read-only file system (a tmpfs mounted ro; root can write into any chmod-ed folder)."""
    mount_point = tmp_path / "read_only"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {result.stderr.strip()}")
    yield mount_point
    subprocess.run(["umount", str(mount_point)], check=True)


def test_read_only_save_dir_is_refused_in_validation_and_dry_run(workspace, submit, read_only_dir):
    for extra in (["--dry-run"], []):
        code, _, err = submit(["mae", workspace["mae"], "--set", f"checkpoint.save_dir={read_only_dir}/runs", *extra])
        assert code == 2, err
        assert err.strip() == (f"error: run 'pre': cannot write in {read_only_dir} (read-only file system); set "
                               "checkpoint.save_dir (--set checkpoint.save_dir=DIR) to a folder you can write to")


def test_time_shorter_than_the_signal_delay_is_refused(workspace, submit):
    code, _, err = submit(["mae", workspace["mae"], "--dry-run"], {"TIME": "3"})
    assert code == 2
    assert "TIME (slurm.time) = 3 (180 s) is too short for slurm.signal_delay_s = 300" in err
    assert "set TIME to at least 00:10:00" in err
    code, _, _ = submit(["mae", workspace["mae"], "--dry-run", "--set", "slurm.signal_delay_s=60"], {"TIME": "3"})
    assert code == 0
    assert not workspace["runs"].exists()


def test_time_zero_means_no_limit_for_a_local_run(workspace, submit, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "0.5")  # 1.5 s of training: far beyond a limit of 0
    code, out, err = submit(["mae", workspace["mae"], "--entry", STANDIN], {"TIME": "0"})
    assert code == 0, err
    assert (workspace["runs"] / "pre" / "DONE").exists() and "headline: epoch 3" in out


def test_second_submission_into_a_run_that_a_local_job_is_running_is_refused(workspace, submit):
    first = subprocess.Popen(
        [sys.executable, "-m", "jobs.submit", "mae", workspace["mae"], "--entry", STANDIN],
        cwd=REPO, env={**os.environ, "EXECUTOR": "local", "CPU_PROCS": "1", "STANDIN_STEP_S": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    starts = workspace["runs"] / "pre" / "starts.txt"
    try:
        deadline = time.monotonic() + 60
        while not starts.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.1)
        code, _, err = submit(["mae", workspace["mae"], "--entry", STANDIN, "--force"])
        assert code == 2 and "another submission of run 'pre' is in progress" in err
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    assert starts.read_text().split() == ["0"]  # one trainer, started once


def test_status_shows_the_trainers_own_error_before_the_log_tails(workspace, submit, tmp_path):
    not_a_checkpoint = tmp_path / "garbage.pt"
    not_a_checkpoint.write_text("not a checkpoint")
    code, _, _ = submit(["mae", workspace["mae"], "--set", "data.max_events=32", "--set", "training.epochs=1",
                         "--set", f"checkpoint.resume_from={not_a_checkpoint}"])
    assert code == 1
    code, out, _ = submit(["status", "pre", "--save-dir", str(workspace["runs"])])
    job_id = json.loads((workspace["runs"] / "pre" / "jobs.json").read_text())[0]["job_id"]
    cause = out.splitlines()[1]
    assert cause.startswith(f"trainer error: checkpoint {not_a_checkpoint} is not a readable torch file"), out
    assert cause.endswith(f"{workspace['runs'] / 'pre' / 'logs' / f'{job_id}_0_log.err'})")
    assert out.index("trainer error:") < out.index("last 15 lines of") < out.index("RuntimeError: the trainer exited")
