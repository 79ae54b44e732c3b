"""Prediction arrays on the real SLURM cluster (tests/slurm/cluster.sh): 3 files in 2 tasks and the merge job,
a re-submission that does nothing, a killed task whose re-submission predicts only its files, a dry run.

Skipped with the reason shown when sbatch / sinfo do not work (failed in CI, see tests/slurm/availability.py).
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from jobs.executors import wait_slurm
from jobs.submit import main
from tests.fixtures_e2e import e2e_data, one_thread, reg_checkpoint  # noqa: F401 (fixtures)
from tests.jobs.predict_helpers import REPO, model_in_run, planned_tasks, read, stamps
from tests.jobs.slurm_helpers import WAIT_S, job_state, slurm_env, wait_for

pytestmark = pytest.mark.slurm
SLURM = {"EXECUTOR": "slurm", "CPU_PROCS": "1", "FILES_PER_TASK": "2"}


@pytest.fixture
def model(tmp_path, reg_checkpoint, monkeypatch) -> Path:
    monkeypatch.chdir(REPO)
    return model_in_run(tmp_path, reg_checkpoint)


def _jobs(out_dir: Path) -> list[dict]:
    return read(out_dir / "jobs.json")


def _named(job_name: str) -> list[str]:
    """Ids of the jobs squeue knows (any state) with this name."""
    return subprocess.run(["squeue", "-h", "-t", "all", "-n", job_name, "-o", "%i"], capture_output=True,
                          text=True).stdout.split()


def test_array_over_three_files_then_a_resubmission_that_does_nothing(model, shard_dir, capsys):
    out_dir = model.parent.parent / "predictions" / shard_dir.name
    assert main(["predict", str(model), str(shard_dir), "--wait"], SLURM) == 0
    out = capsys.readouterr().out
    assert "3 input files, 3 predicted now, 0 skipped as complete, 0 failed; 120 events" in out
    jobs = _jobs(out_dir)
    array_id = jobs[0]["job_id"].split("_")[0]
    assert [job["job_id"] for job in jobs[:2]] == [f"{array_id}_0", f"{array_id}_1"]  # one array of two tasks
    assert jobs[2]["kind"] == "merge" and jobs[2]["after"] == array_id
    assert planned_tasks(out_dir) == {"shard_0.root": 0, "shard_1.root": 0, "shard_2.root": 1}
    summary = read(out_dir / "summary.json")
    assert (summary["done"], summary["events"], summary["failures"]) == (3, 120, [])
    assert {"E_rel_w68_pct", "u_w68"} <= set(summary["resolutions"]["all"])
    before, queued = stamps(out_dir), _named(f"predict_{shard_dir.name}")
    assert main(["predict", str(model), str(shard_dir), "--wait"], SLURM) == 0
    assert "all 3 input files are predicted completely by this model" in capsys.readouterr().out
    assert stamps(out_dir) == before and len(_jobs(out_dir)) == 3
    assert _named(f"predict_{shard_dir.name}") == queued  # nothing submitted


def test_a_killed_task_is_predicted_again_alone(model, shard_dir, capsys):
    out_dir = model.parent.parent / "predictions" / "killed"
    env = {**SLURM, "TAG": "killed"}
    assert main(["predict", str(model), str(shard_dir)], env) == 0
    jobs = _jobs(out_dir)
    first, merge_id = jobs[0]["job_id"], jobs[2]["job_id"]
    wait_for(lambda: job_state(first) == "RUNNING", "task 0 to start", poll_s=0.05)
    subprocess.run(["scancel", first], check=True)
    states = wait_slurm([job["job_id"] for job in jobs], timeout_s=WAIT_S)
    assert states[first] == "CANCELLED" and states[jobs[1]["job_id"]] == "COMPLETED"
    assert states[merge_id] != "COMPLETED" and not (out_dir / "summary.json").exists()  # afterok never satisfied
    done = stamps(out_dir)
    missing = {"shard_0_pred.root", "shard_1_pred.root"} - set(done)
    assert "shard_2_pred.root" in done and missing, f"task 0 finished before it was cancelled: {done}"
    capsys.readouterr()
    assert main(["predict", str(model), str(shard_dir), "--wait"], env) == 0
    assert f"{len(missing)} predicted now, {3 - len(missing)} skipped as complete, 0 failed; 120 events" in (
        capsys.readouterr().out)
    again = {Path(name).name.replace(".root", "_pred.root") for name, task in planned_tasks(out_dir).items()
             if task is not None}
    assert again == missing  # only the killed task's files
    assert {name: stamp for name, stamp in stamps(out_dir).items() if name in done} == done  # the others untouched


def test_dry_run_through_the_wrapper_submits_nothing(model, shard_dir):
    queued = _named("predict_dry")
    result = subprocess.run([str(REPO / "jobs" / "run_predict.sh"), str(model), str(shard_dir)],
                            env=slurm_env(DRY_RUN="1", FILES_PER_TASK="2", TAG="dry"), capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --array=0-1%2" in result.stdout and "--dependency='afterok:<array job id>'" in result.stdout
    assert result.stdout.count("sbatch --test-only: sbatch: Job") == 2
    assert _named("predict_dry") == queued and not (model.parent.parent / "predictions").exists()
