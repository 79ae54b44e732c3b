"""Job-suite reliability on a real SLURM cluster, with the stand-in trainer: one job per run directory at a
time (FORCE does not override it, racing submissions get one job), and a trainer that exited 0 is never
requeued, however late the checkpoint signal comes."""
from __future__ import annotations

import re
import subprocess

import pytest

from jobs.executors import wait_slurm
from jobs.submit import main
from tests.jobs.slurm_helpers import REPO, STANDIN, WAIT_S, job_state, records, running_until, slurm_env, wait_for

pytestmark = pytest.mark.slurm


def _restarts(job_id: str) -> int:
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return int(re.search(r"\bRestarts=(\d+)", shown).group(1))


def test_a_run_with_a_live_job_is_refused_even_with_force(slurm_workspace, capsys, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "1")  # 60 s unless cancelled
    runs, sets = slurm_workspace["runs"], [*slurm_workspace["sets"], "--set", "training.epochs=60", "--entry", STANDIN]
    env = {"EXECUTOR": "slurm", "CPU_PROCS": "1", "RUN_NAME": "busy"}
    assert main(["mae", "config/mae/mae_demo.yaml", *sets], env) == 0
    job_id = records(runs / "busy")[0]["job_id"]
    capsys.readouterr()
    try:
        for extra in (["--force"], ["--force", "--dry-run"]):
            assert main(["mae", "config/mae/mae_demo.yaml", *sets, *extra], env) == 2
            err = capsys.readouterr().err
            assert f"run 'busy' still has job {job_id} " in err and f"scancel {job_id}" in err, err
            assert "FORCE=1 does not override this" in err
        assert [record["job_id"] for record in records(runs / "busy")] == [job_id]
    finally:
        subprocess.run(["scancel", job_id], check=True)


@pytest.mark.parametrize("force", [False, True])
def test_racing_submissions_of_one_run_get_one_job(slurm_workspace, monkeypatch, force):
    """Three submissions at once: of a new run (the run directory is created exclusively), or with FORCE=1
    into an existing one (the submission lock, then the recorded live job, stop the others)."""
    monkeypatch.setenv("STANDIN_STEP_S", "1")
    run_dir = slurm_workspace["runs"] / "trio"
    if force:
        run_dir.mkdir(parents=True)
    sets = [*slurm_workspace["sets"], "--set", "training.epochs=60", "--entry", STANDIN]
    command = [str(REPO / "jobs" / "run_mae.sh"), "config/mae/mae_demo.yaml", *sets]
    racers = [subprocess.Popen(command, env=slurm_env(RUN_NAME="trio", FORCE="1" if force else ""),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [(racer.wait(timeout=120), *racer.communicate()) for racer in racers]
    job_ids = [record["job_id"] for record in records(run_dir)]
    try:
        assert sorted(code for code, _, _ in results) == [0, 2, 2], results
        assert len(job_ids) == 1
        for code, _, err in results:
            assert code == 0 or "trio" in err, err
    finally:
        subprocess.run(["scancel", *job_ids], check=True)


def test_a_trainer_that_exited_0_is_not_requeued_by_a_late_signal(slurm_workspace, monkeypatch):
    """The signal comes while the trainer has no handler (still starting up): the request is lost on it, it
    trains to the end and exits 0 while the job wrapper waits for it; the job then ends instead of requeueing."""
    monkeypatch.setenv("STANDIN_IGNORE_SIGNALS", "1")
    monkeypatch.setenv("STANDIN_STEP_S", "0.3")
    run_dir = slurm_workspace["runs"] / "late"
    sets = [*slurm_workspace["sets"], "--set", "training.epochs=10", "--entry", STANDIN]
    assert main(["mae", "config/mae/mae_demo.yaml", *sets], {"EXECUTOR": "slurm", "CPU_PROCS": "1",
                                                               "RUN_NAME": "late"}) == 0
    job_id = records(run_dir)[0]["job_id"]
    wait_for(running_until(job_id, run_dir, run_dir / "starts.txt"), "the trainer to start", poll_s=0.05)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    assert wait_slurm([job_id], timeout_s=WAIT_S)[job_id] == "COMPLETED"
    assert _restarts(job_id) == 0 and job_state(job_id) == "COMPLETED"
    assert (run_dir / "starts.txt").read_text().split() == ["0"] and (run_dir / "DONE").exists()
    assert "not requeueing" in (run_dir / "logs" / f"{job_id}_0_log.err").read_text()
