"""The job suite on a real SLURM cluster (tests/slurm/cluster.sh): dry runs, chain, requeue, sweep.

Skipped with the reason shown when sbatch / sinfo do not work (failed in CI, see
tests/slurm/availability.py). Runs write under tmp_path only.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from jobs.executors import queue_states, wait_slurm
from jobs.submit import main
from tests.jobs.slurm_helpers import REPO, STANDIN, WAIT_S, queue_listing, records, running_until, slurm_env, wait_for


pytestmark = pytest.mark.slurm


@pytest.mark.parametrize("wrapper, args", [
    ("run_mae.sh", ["config/mae/mae_demo.yaml"]),
    ("run_regressor.sh", ["config/reg/reg_demo.yaml"]),
    ("run_inpainter.sh", ["config/inp/inpainter_demo.yaml"]),
    ("run_chain.sh", ["config/mae/mae_demo.yaml", "config/reg/reg_demo.yaml"]),
    ("run_chain.sh", ["config/mae/mae_demo.yaml", "config/inp/inpainter_demo.yaml", "--second", "inpainter"]),
    ("run_sweep.sh", ["config/mae/mae_demo.yaml", "--grid", "training.lr=1e-4,3e-4"]),
])
def test_dry_run_prints_accepted_scripts_and_submits_nothing(slurm_workspace, wrapper, args):
    extra = ["--set", f"model.pretrained_encoder={slurm_workspace['encoder']}"] if wrapper == "run_regressor.sh" else []
    queue_before = queue_listing()
    result = subprocess.run([str(REPO / "jobs" / wrapper), *args, *slurm_workspace["sets"], *extra],
                            env=slurm_env(DRY_RUN="1"), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "#SBATCH --signal=USR2@" in result.stdout and "#SBATCH --requeue" in result.stdout
    assert result.stdout.count("sbatch --test-only: sbatch: Job") >= 1
    if wrapper == "run_chain.sh":
        assert "--dependency='afterok:<job id of mae_demo>'" in result.stdout
    if wrapper == "run_sweep.sh":
        assert "#SBATCH --array=0-1%2" in result.stdout
    assert queue_listing() == queue_before
    assert not slurm_workspace["runs"].exists()


def test_unknown_partition_shows_the_sbatch_error(slurm_workspace, capsys):
    code = main(["mae", "config/mae/mae_demo.yaml", *slurm_workspace["sets"]],
                {"EXECUTOR": "slurm", "CPU_PROCS": "1", "PARTITION": "no_such_partition"})
    err = capsys.readouterr().err
    direct = subprocess.run(["sbatch", "--test-only", "--partition=no_such_partition"],
                            input="#!/bin/bash\ntrue\n", capture_output=True, text=True)
    assert code == 2 and direct.returncode != 0
    assert direct.stderr.strip() in err  # sbatch's own words, unchanged
    assert not slurm_workspace["runs"].exists()


def test_chain_end_to_end_with_the_real_trainers(slurm_workspace):
    runs = slurm_workspace["runs"]
    chain = subprocess.Popen(
        [str(REPO / "jobs" / "run_chain.sh"), "config/mae/mae_demo.yaml", "config/reg/reg_demo.yaml",
         *slurm_workspace["sets"], "--wait"], env=slurm_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reg_jobs = wait_for(lambda: (runs / "reg_demo" / "jobs.json").exists() and records(runs / "reg_demo"),
                         "the regressor job")
    mae_id, reg_id = records(runs / "mae_demo")[0]["job_id"], reg_jobs[0]["job_id"]
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


def test_chain_mae_then_inpainter_with_the_real_trainers(slurm_workspace):
    runs = slurm_workspace["runs"]
    done = subprocess.run(
        [str(REPO / "jobs" / "run_chain.sh"), "config/mae/mae_demo.yaml", "config/inp/inpainter_demo.yaml",
         "--second", "inpainter", *slurm_workspace["sets"], "--wait"],
        env=slurm_env(), capture_output=True, text=True, timeout=WAIT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    encoder = runs / "mae_demo" / "encoder_best.pt"
    assert records(runs / "inp_demo")[0]["after"] == records(runs / "mae_demo")[0]["job_id"]
    for name in ("mae_demo", "inp_demo"):
        assert (runs / name / "DONE").exists() and f"run {name} (finished)" in done.stdout
    inp_cfg = yaml.safe_load((runs / "inp_demo" / "config.yaml").read_text())
    assert inp_cfg["model"]["pretrained_encoder"] == str(encoder)
    loaded = json.loads((runs / "inp_demo" / "pretrained_encoder.json").read_text())  # written by the trainer
    assert Path(loaded["path"]) == encoder.resolve()
    from lib.recipes.inpainting import load_inpainter

    assert load_inpainter(runs / "inp_demo" / "checkpoints" / "last.pt").cfg.checkpoint.run_name == "inp_demo"


@pytest.mark.parametrize("procs", [1, 2])
def test_interrupted_pretraining_requeues_and_resumes_to_the_same_step(slurm_workspace, procs):
    """One process, and two under torchrun (whose agent must relay the request to its workers)."""
    from lib.engine.checkpoint import load_checkpoint

    runs, run_dir = slurm_workspace["runs"], slurm_workspace["runs"] / "mae_demo"
    epochs, steps = 2, 4  # 120 events in 3 files of 4 chunks, >= 40 per rank, in batches of 4: >= 10 per epoch
    sets = [*slurm_workspace["sets"], "--set", "data.max_events=null", "--set", "data.max_val_events=16",
            "--set", f"training.epochs={epochs}", "--set", "data.batch_size=4", "--set", f"data.steps_per_epoch={steps}",
            "--set", "checkpoint.save_every_steps=1"]
    assert main(["mae", "config/mae/mae_demo.yaml", *sets], {"EXECUTOR": "slurm", "CPU_PROCS": str(procs)}) == 0
    job_id = records(run_dir)[0]["job_id"]
    wait_for(running_until(job_id, run_dir, run_dir / "checkpoints" / "last.pt"), "the first last.pt", poll_s=0.05)
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    # Far less than the grace of 285 s: every worker got the request and stopped at its next step.
    wait_for(lambda: queue_states([job_id]).get(job_id, ("",))[0] == "PENDING", "the requeue", timeout_s=120)
    stopped_at = load_checkpoint(run_dir / "checkpoints" / "last.pt")["global_step"]
    assert 0 < stopped_at < epochs * steps  # stopped on the request, not at the end of training
    # The requeued job starts once its old credential expired (AuthInfo cred_expire in tests/slurm/cluster.sh);
    # forcing StartTime=now races that expiry and slurmd refuses to launch it ("Job credential revoked").
    assert wait_slurm([job_id], timeout_s=WAIT_S)[job_id] == "COMPLETED"
    history = json.loads((run_dir / "training_history.json").read_text())
    assert [record["epoch"] for record in history] == list(range(1, epochs + 1))
    assert history[-1]["global_step"] == epochs * steps
    train_log = (run_dir / "train.log").read_text()
    assert "resumed from" in train_log and (run_dir / "DONE").exists()
    job_log = (run_dir / "logs" / f"{job_id}_0_log.err").read_text()
    assert "asking the trainer" in job_log and "grace after a checkpoint request 285 s" in job_log  # 300 s - 15 s
    state = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert state["global_step"] == epochs * steps
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{runs.resolve()}/mlflow.db")
    experiment = client.get_experiment_by_name("xecmae_demo")
    assert len(client.search_runs([experiment.experiment_id])) == 1  # the requeued job continued the same run


def test_sweep_of_three_points_is_one_array_job(slurm_workspace):
    runs = slurm_workspace["runs"]
    code = main(["sweep", "config/mae/mae_demo.yaml", *slurm_workspace["sets"], "--entry", STANDIN, "--wait",
                 "--points", "training.epochs=2", "training.epochs=3", "training.epochs=4"],
                {"EXECUTOR": "slurm", "CPU_PROCS": "1", "RUN_NAME": "sw"})
    assert code == 0
    job_ids = [records(runs / f"sw_epochs{epochs}")[0]["job_id"] for epochs in (2, 3, 4)]
    array_ids = {job_id.split("_")[0] for job_id in job_ids}
    assert len(array_ids) == 1 and [job_id.split("_")[1] for job_id in job_ids] == ["0", "1", "2"]
    for index, job_id in enumerate(job_ids):
        run_dir = runs / f"sw_epochs{index + 2}"
        assert (run_dir / "DONE").exists()
        assert json.loads((run_dir / "training_history.json").read_text())[-1]["global_step"] == index + 2
        assert (run_dir / "logs" / f"{job_id}_0_log.out").resolve().is_file()
    assert sorted(path.name for path in runs.iterdir() if path.name.startswith("sw_")) == [
        "sw_epochs2", "sw_epochs3", "sw_epochs4", "sw_sweep"]
