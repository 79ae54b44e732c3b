"""The job suite on a real SLURM cluster (tests/slurm/cluster.sh): dry runs, chain, requeue, sweep.

Skipped with the reason shown when sbatch / sinfo do not work. Runs write under tmp_path only.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from jobs.executors import queue_states, wait_slurm
from jobs.submit import main

REPO = Path(__file__).resolve().parents[2]
STANDIN = "tests.slurm.standin_trainer"
WAIT_S = 240


def _slurm_problem() -> str | None:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return "sbatch / sinfo not on PATH (start a cluster with tests/slurm/cluster.sh and export SLURM_CONF)"
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        return f"sinfo does not work: {result.stderr.strip()}"
    if not {"idle", "mixed", "allocated"} & set(result.stdout.split()):
        return f"no usable SLURM node (sinfo states: {result.stdout.split()})"
    return None


_PROBLEM = _slurm_problem()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(_PROBLEM is not None, reason=str(_PROBLEM))]


@pytest.fixture
def workspace(tmp_path, shard_dir, monkeypatch):
    """Tiny demo-config overrides on the shared shards; runs in tmp_path/runs, MLflow sqlite there too."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    overrides = [f"data.train_path={shard_dir}", f"data.val_path={shard_dir}", f"checkpoint.save_dir={runs}",
                 "data.num_workers=0", "data.max_events=64", "data.max_val_events=64", "training.epochs=1",
                 "training.num_val_predictions=0"]
    encoder = tmp_path / "encoder_best.pt"
    encoder.write_text("placeholder for dry runs")
    return {"runs": runs, "sets": [arg for item in overrides for arg in ("--set", item)], "encoder": encoder}


def _queue() -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True, text=True).stdout


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHON": sys.executable, "EXECUTOR": "slurm", "CPU_PROCS": "1", **extra}


def _records(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "jobs.json").read_text())


@pytest.mark.parametrize("wrapper, args", [
    ("run_mae.sh", ["config/mae/mae_demo.yaml"]),
    ("run_regressor.sh", ["config/reg/reg_demo.yaml"]),
    ("run_chain.sh", ["config/mae/mae_demo.yaml", "config/reg/reg_demo.yaml"]),
    ("run_sweep.sh", ["config/mae/mae_demo.yaml", "--grid", "training.lr=1e-4,3e-4"]),
])
def test_dry_run_prints_accepted_scripts_and_submits_nothing(workspace, wrapper, args):
    extra = ["--set", f"model.pretrained_encoder={workspace['encoder']}"] if wrapper == "run_regressor.sh" else []
    queue_before = _queue()
    result = subprocess.run([str(REPO / "jobs" / wrapper), *args, *workspace["sets"], *extra],
                            env=_env(DRY_RUN="1"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --signal=USR2@" in result.stdout and "#SBATCH --requeue" in result.stdout
    assert result.stdout.count("sbatch --test-only: sbatch: Job") >= 1
    if wrapper == "run_chain.sh":
        assert "--dependency='afterok:<job id of mae_demo>'" in result.stdout
    if wrapper == "run_sweep.sh":
        assert "#SBATCH --array=0-1%2" in result.stdout
    assert _queue() == queue_before
    assert not workspace["runs"].exists()


def test_unknown_partition_shows_the_sbatch_error(workspace, capsys):
    code = main(["mae", "config/mae/mae_demo.yaml", *workspace["sets"]],
                {"EXECUTOR": "slurm", "CPU_PROCS": "1", "PARTITION": "no_such_partition"})
    err = capsys.readouterr().err
    direct = subprocess.run(["sbatch", "--test-only", "--partition=no_such_partition"],
                            input="#!/bin/bash\ntrue\n", capture_output=True, text=True)
    assert code == 2 and direct.returncode != 0
    assert direct.stderr.strip() in err  # sbatch's own words, unchanged
    assert not workspace["runs"].exists()


def _wait_for(predicate, what: str, timeout_s: float = WAIT_S, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out waiting for {what}; queue:\n{_queue()}")


def test_chain_end_to_end_with_the_real_trainers(workspace):
    runs = workspace["runs"]
    chain = subprocess.Popen(
        [str(REPO / "jobs" / "run_chain.sh"), "config/mae/mae_demo.yaml", "config/reg/reg_demo.yaml",
         *workspace["sets"], "--wait"], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reg_jobs = _wait_for(lambda: (runs / "reg_demo" / "jobs.json").exists() and _records(runs / "reg_demo"),
                         "the regressor job")
    mae_id, reg_id = _records(runs / "mae_demo")[0]["job_id"], reg_jobs[0]["job_id"]
    assert reg_jobs[0]["after"] == mae_id
    state, reason = queue_states([reg_id])[reg_id]
    assert (state, reason) == ("PENDING", "Dependency")
    out, err = chain.communicate(timeout=WAIT_S)
    assert chain.returncode == 0, err[-3000:]
    for name in ("mae_demo", "reg_demo"):
        assert (runs / name / "DONE").exists() and (runs / name / "checkpoints" / "last.pt").exists()
        assert f"run {name} (finished)" in out
    assert (runs / "mae_demo" / "encoder_best.pt").exists()
    reg_cfg = yaml.safe_load((runs / "reg_demo" / "config.yaml").read_text())
    assert reg_cfg["model"]["pretrained_encoder"] == str(runs / "mae_demo" / "encoder_best.pt")
    loaded = json.loads((runs / "reg_demo" / "pretrained_encoder.json").read_text())  # written by the trainer
    assert Path(loaded["path"]) == (runs / "mae_demo" / "encoder_best.pt").resolve()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("xecmae_demo")
    names = {run.info.run_name: run.info.status for run in client.search_runs([experiment.experiment_id])}
    assert names == {"mae_demo": "FINISHED", "reg_demo": "FINISHED"}


def test_interrupted_pretraining_requeues_and_resumes_to_the_same_step(workspace, capsys):
    runs, run_dir = workspace["runs"], workspace["runs"] / "mae_demo"
    epochs, steps = 2, 3  # 120 events in batches of 32: 3 full batches per epoch
    sets = [*workspace["sets"], "--set", "data.max_events=null", "--set", f"training.epochs={epochs}",
            "--set", f"data.steps_per_epoch={steps}", "--set", "checkpoint.save_every_steps=1"]
    assert main(["mae", "config/mae/mae_demo.yaml", *sets], {"EXECUTOR": "slurm", "CPU_PROCS": "1"}) == 0
    job_id = _records(run_dir)[0]["job_id"]

    def first_checkpoint() -> bool:
        state = queue_states([job_id]).get(job_id, ("gone",))[0]
        assert state in {"PENDING", "RUNNING"}, f"job {job_id} is {state}: {(run_dir / 'logs').iterdir()}"
        return (run_dir / "checkpoints" / "last.pt").exists()

    _wait_for(first_checkpoint, "the first last.pt", poll_s=0.05)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    _wait_for(lambda: queue_states([job_id]).get(job_id, ("",))[0] == "PENDING", "the requeue")
    # The requeued job starts once its old credential expired (AuthInfo cred_expire in tests/slurm/cluster.sh);
    # forcing StartTime=now races that expiry and slurmd refuses to launch it ("Job credential revoked").
    assert wait_slurm([job_id], timeout_s=WAIT_S)[job_id] == "COMPLETED"
    history = json.loads((run_dir / "training_history.json").read_text())
    assert [record["epoch"] for record in history] == list(range(1, epochs + 1))
    assert history[-1]["global_step"] == epochs * steps
    train_log = (run_dir / "train.log").read_text()
    assert "resumed from" in train_log and (run_dir / "DONE").exists()
    job_log = (run_dir / "logs" / f"{job_id}_0_log.err").read_text()
    assert "asking the trainer" in job_log
    from lib.engine.checkpoint import load_checkpoint

    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["global_step"] == epochs * steps
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("xecmae_demo")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # the requeued job continued the same run


def test_sweep_of_three_points_is_one_array_job(workspace):
    runs = workspace["runs"]
    code = main(["sweep", "config/mae/mae_demo.yaml", *workspace["sets"], "--entry", STANDIN, "--wait",
                 "--points", "training.epochs=2", "training.epochs=3", "training.epochs=4"],
                {"EXECUTOR": "slurm", "CPU_PROCS": "1", "RUN_NAME": "sw"})
    assert code == 0
    job_ids = [_records(runs / f"sw_{i}")[0]["job_id"] for i in range(3)]
    array_ids = {job_id.split("_")[0] for job_id in job_ids}
    assert len(array_ids) == 1 and [job_id.split("_")[1] for job_id in job_ids] == ["0", "1", "2"]
    for index, job_id in enumerate(job_ids):
        run_dir = runs / f"sw_{index}"
        assert (run_dir / "DONE").exists()
        assert json.loads((run_dir / "training_history.json").read_text())[-1]["global_step"] == index + 2
        assert (run_dir / "logs" / f"{job_id}_0_log.out").resolve().is_file()
    assert sorted(path.name for path in runs.iterdir() if path.name.startswith("sw_")) == [
        "sw_0", "sw_1", "sw_2", "sw_sweep"]
