"""`python -m lib.study labels` on the real SLURM cluster (tests/slurm/cluster.sh) with the stand-in trainer:
one job array for every point, nothing submitted twice while the jobs are queued or running, the report
once all have ended, and a re-run that submits nothing."""
from __future__ import annotations

import csv
import subprocess

import pytest

from jobs.executors import wait_slurm
from lib.study.__main__ import main
from tests.jobs.slurm_helpers import REPO, STANDIN, WAIT_S, records, slurm_env

pytestmark = pytest.mark.slurm


def test_study_is_one_array_job_and_a_rerun_submits_nothing(study_workspace, capsys, caplog, monkeypatch):
    monkeypatch.setenv("STANDIN_STEP_S", "3")  # the jobs are still queued or running at the second call
    runs = study_workspace["runs"]
    argv = ["labels", "--config", study_workspace["reg"], "--mae", study_workspace["encoder"], "--entry", STANDIN,
            "--name", "sl", "--events", "8,16", "--seeds", "1", "--steps", "2"]
    env = {"EXECUTOR": "slurm", "CPU_PROCS": "1"}
    assert main(argv, env) == 0
    names = [f"sl_{mode}_n{n}_s0" for n in (8, 16) for mode in ("pretrained", "frozen", "scratch")]
    job_ids = [records(runs / name)[0]["job_id"] for name in names]
    assert len({job_id.split("_")[0] for job_id in job_ids}) == 1  # one array
    assert sorted(int(job_id.split("_")[1]) for job_id in job_ids) == list(range(6))
    assert "0 of 6 points finished" in capsys.readouterr().out
    caplog.set_level("INFO", logger="lib.study.labels")
    assert main(argv, env) == 0  # while they are queued or running: nothing submitted again
    assert "0 finished, 6 queued or running in SLURM, 0 to submit" in caplog.text.replace("points ", "")
    assert all(len(records(runs / name)) == 1 for name in names)
    states = wait_slurm(job_ids, timeout_s=WAIT_S)
    assert set(states.values()) == {"COMPLETED"}, states
    assert main(argv, env) == 0  # all ended: the report, no submission
    out = capsys.readouterr().out
    assert "label-efficiency study written" in out
    assert all(len(records(runs / name)) == 1 for name in names)
    with (runs / "sl" / "labels.csv").open() as handle:
        assert {(row["mode"], row["events"]) for row in csv.DictReader(handle)} == {
            (mode, n) for mode in ("pretrained", "frozen", "scratch", "classical") for n in ("8", "16")}


def test_run_study_dry_run_prints_one_accepted_array_and_submits_nothing(study_workspace):
    result = subprocess.run([str(REPO / "jobs" / "run_study.sh"), "--config", study_workspace["reg"], "--mae",
                             study_workspace["encoder"], "--events", "8,16", "--seeds", "1"],
                            env=slurm_env(DRY_RUN="1"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --array=0-5%6" in result.stdout and "sbatch --test-only: sbatch: Job" in result.stdout
    job_names = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%j"], capture_output=True, text=True).stdout
    assert "labels_reg_sweep" not in job_names.split()  # the cluster is shared: look for this study's array only
    assert not study_workspace["runs"].exists()
