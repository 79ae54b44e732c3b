"""The submission CLI without SLURM: bad input, dry runs and the local executor (stand-in trainer)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
STANDIN = "tests.slurm.standin_trainer"


def test_dry_run_prints_the_plan_and_creates_nothing(workspace, submit):
    code, out, _ = submit(["mae", workspace["mae"]], {"DRY_RUN": "1"})
    assert code == 0
    run_dir = workspace["runs"] / "pre"
    assert f"-m lib.train_mae --config {run_dir.resolve()}/config.yaml" in out
    assert "training.epochs: 100 -> 3" in out and "checkpoint.auto_resume: False -> True" in out
    assert str(run_dir / "checkpoints" / "last.pt") in out
    assert not workspace["runs"].exists()


def test_dry_run_chain_points_the_regressor_at_the_mae_encoder(workspace, submit):
    code, out, _ = submit(["chain", workspace["mae"], workspace["reg"]], {"DRY_RUN": "1"})
    encoder = workspace["runs"] / "pre" / "encoder_best.pt"
    assert code == 0
    assert f"model.pretrained_encoder: None -> {str(encoder)!r}" in out
    assert "fine starts after pre completes successfully (afterok)" in out
    assert not workspace["runs"].exists()


def test_dry_run_chain_with_the_inpainter_second(workspace, submit):
    code, out, _ = submit(["chain", workspace["mae"], workspace["reg"], "--second", "inpainter",
                           "--inp-set", "training.mask_ratio=0.1"], {"DRY_RUN": "1"})
    encoder = workspace["runs"] / "pre" / "encoder_best.pt"
    assert code == 0
    assert f"-m lib.train_inpainter --config {(workspace['runs'] / 'fine').resolve()}/config.yaml" in out
    assert f"model.pretrained_encoder: None -> {str(encoder)!r}" in out and "training.mask_ratio: 0.05 -> 0.1" in out
    assert "fine starts after pre completes successfully (afterok)" in out
    assert not workspace["runs"].exists()


def test_chain_overrides_of_the_other_second_run_are_refused(workspace, submit):
    code, _, err = submit(["chain", workspace["mae"], workspace["reg"], "--second", "inpainter",
                           "--reg-set", "training.lr=1e-3"], {"DRY_RUN": "1"})
    assert code == 2 and "--reg-set training.lr=1e-3" in err and "--inp-set" in err


def test_inpainter_with_a_bad_dead_channel_list_is_refused_before_anything(workspace, submit):
    dead = workspace["tmp"] / "dead.txt"
    dead.write_text("12\n5000\n")
    code, _, err = submit(["inpainter", workspace["reg"], "--set", f"data.dead_channels={dead}",
                           "--set", "training.mask_mode=mixed"])
    assert code == 2 and f"{dead}:2" in err and "out of range" in err
    assert not workspace["runs"].exists()


def test_dry_run_sweep_of_inpainter_mask_modes(workspace, submit, tmp_path):
    dead = tmp_path / "dead.txt"
    dead.write_text("1 12\n2 40\n")
    code, out, _ = submit(["sweep", workspace["reg"], "--kind", "inp", "--set", f"data.dead_channels={dead}",
                           "--grid", "training.mask_mode=random,mixed"], {"DRY_RUN": "1", "RUN_NAME": "modes"})
    assert code == 0, out
    assert out.count("-m lib.train_inpainter") >= 1 and "training.mask_mode: 'random' -> 'mixed'" in out
    assert not workspace["runs"].exists()


def test_dry_run_does_not_import_torch(workspace):
    probe = ("import sys; from jobs.submit import main; "
             f"code = main(['mae', {workspace['mae']!r}], {{'DRY_RUN': '1', 'EXECUTOR': 'local'}}); "
             "assert code == 0, code; assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_missing_config_file(workspace, submit):
    code, _, err = submit(["mae", str(workspace["tmp"] / "nope.yaml")])
    assert code == 2 and "config file not found" in err and "nope.yaml" in err


def test_invalid_config_fails_before_anything_is_created(workspace, submit):
    code, _, err = submit(["mae", workspace["mae"], "--set", "training.epoch=3"])
    assert code == 2 and "training.epoch" in err and "did you mean 'training.epochs'" in err
    assert not workspace["runs"].exists()


def test_missing_data_path(workspace, submit):
    missing = workspace["tmp"] / "no_such_data"
    code, _, err = submit(["mae", workspace["mae"], "--set", f"data.train_path={missing}"])
    assert code == 2 and "data.train_path" in err and str(missing) in err


def test_missing_pretrained_encoder_of_a_single_regressor_run(workspace, submit):
    code, _, err = submit(["regressor", workspace["reg"], "--set", "model.pretrained_encoder=/no/enc.pt"])
    assert code == 2 and "model.pretrained_encoder = /no/enc.pt does not exist" in err


@pytest.mark.parametrize("env, expected", [
    ({"NUM_GPUS": "0", "CPU_PROCS": ""}, "CPU_PROCS"),
    ({"NUM_GPUS": "abc"}, "NUM_GPUS=abc"),
    ({"TIME": "1 day"}, "TIME=1 day"),
    ({"RUN_NAME": "a/b"}, "RUN_NAME=a/b"),
    ({"RUN_NAME": "a b"}, "RUN_NAME=a b"),
])
def test_bad_knobs_are_refused_before_submission(workspace, submit, env, expected):
    code, _, err = submit(["mae", workspace["mae"]], env)
    assert code == 2 and expected in err
    assert not workspace["runs"].exists()


def test_existing_run_directory_is_refused_unless_forced(workspace, submit):
    (workspace["runs"] / "pre").mkdir(parents=True)
    code, _, err = submit(["mae", workspace["mae"], "--dry-run"])
    assert code == 2 and "already exists" in err and "FORCE=1" in err
    (workspace["runs"] / "pre" / "DONE").write_text("")
    code, _, err = submit(["mae", workspace["mae"], "--dry-run"])
    assert code == 2 and "already finished" in err
    code, out, _ = submit(["mae", workspace["mae"], "--dry-run"], {"FORCE": "1"})
    assert code == 0 and "FORCE" in out


def test_executor_slurm_without_sbatch(workspace, submit, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = submit(["mae", workspace["mae"]], {"EXECUTOR": "slurm"})
    assert code == 2 and "sbatch" in err and "EXECUTOR=local" in err
    code, out, _ = submit(["mae", workspace["mae"], "--dry-run"], {"EXECUTOR": "auto"})
    assert code == 0 and "executor: local" in out


def test_executor_auto_runs_locally_when_no_controller_answers(workspace, submit, monkeypatch, tmp_path, caplog):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    no_config = 'echo "sinfo: fatal: Could not establish a configuration source" >&2; exit 1'
    for name, body in (("sbatch", "exit 0"), ("sinfo", no_config)):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    code, out, _ = submit(["mae", workspace["mae"], "--dry-run"], {"EXECUTOR": "auto"})
    assert code == 0 and "executor: local" in out
    assert "no SLURM controller answers (sinfo: sinfo: fatal: Could not establish" in caplog.text
    (bin_dir / "sinfo").write_text("#!/bin/sh\necho debug\n")  # a controller answers: SLURM it is
    code, out, _ = submit(["mae", workspace["mae"], "--dry-run"], {"EXECUTOR": "auto"})
    assert "executor: slurm" in out


def test_local_chain_runs_both_and_records_the_encoder(workspace, submit):
    code, out, _ = submit(["chain", workspace["mae"], workspace["reg"], "--entry", STANDIN])
    assert code == 0, out
    pre, fine = workspace["runs"] / "pre", workspace["runs"] / "fine"
    assert (pre / "DONE").exists() and (fine / "DONE").exists()
    resolved = yaml.safe_load((fine / "config.yaml").read_text())
    assert resolved["model"]["pretrained_encoder"] == str(pre / "encoder_best.pt")
    assert resolved["checkpoint"]["auto_resume"] is True
    job = json.loads((pre / "jobs.json").read_text())[0]
    assert job["executor"] == "local" and (pre / "logs" / f"{job['job_id']}_0_log.out").is_file()
    assert "headline: epoch 3" in out


def test_local_failure_exits_1_without_done(workspace, submit, monkeypatch):
    monkeypatch.setenv("STANDIN_FAIL", "1")
    code, _, err = submit(["mae", workspace["mae"], "--entry", STANDIN])
    assert code == 1 and "failed" in err
    assert not (workspace["runs"] / "pre" / "DONE").exists()


def test_status_reports_jobs_logs_and_artifacts(workspace, submit):
    assert submit(["mae", workspace["mae"], "--entry", STANDIN])[0] == 0
    code, out, _ = submit(["status", "pre", "--save-dir", str(workspace["runs"])])
    job_id = json.loads((workspace["runs"] / "pre" / "jobs.json").read_text())[0]["job_id"]
    assert code == 0
    assert f"{job_id} (local" in out and "COMPLETED" in out
    assert f"[x] finished marker: {workspace['runs'] / 'pre' / 'DONE'}" in out
    assert "standin trained 3 steps" in out
    code, _, err = submit(["status", "nothing_here", "--save-dir", str(workspace["runs"])])
    assert code == 2 and "no run directory" in err


def test_local_sweep_names_its_runs_by_their_values_and_tags_them(workspace, submit):
    code, _, _ = submit(["sweep", workspace["mae"], "--entry", STANDIN, "--grid", "training.epochs=2,4",
                         "--grid", "training.lr=3e-4"], {"RUN_NAME": "sw"})
    assert code == 0
    for epochs in (2, 4):
        run_dir = workspace["runs"] / f"sw_epochs{epochs}_lr3e-4"
        resolved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert resolved["training"]["epochs"] == epochs and resolved["mlflow"]["tags"] == {"sweep": "sw"}
        assert json.loads((run_dir / "training_history.json").read_text())[-1]["global_step"] == epochs
    assert sorted(os.listdir(workspace["runs"])) == ["sw_epochs2_lr3e-4", "sw_epochs4_lr3e-4"]


@pytest.mark.parametrize("points, names", [
    ([["training.lr=3e-4", "training.mask_ratio=0.5"], ["training.lr=1e-3", "training.mask_ratio=0.75"]],
     ["b_lr3e-4_mask0.5", "b_lr1e-3_mask0.75"]),
    ([["data.max_events=10"], ["data.max_val_events=5"]], ["b_max_events10", "b_max_val_events5"]),
    ([["model.face_widths=[8, 16]"], ["training.lr=-1"]], ["b_face8-16", "b_lr-1"]),
    ([["training.seed=1"], ["training.seed=1"]], ["b_0", "b_1"]),
    ([["model.pretrained_encoder=" + "/a" * 50], ["training.seed=2"]], ["b_0", "b_seed2"]),
])
def test_sweep_run_names_by_values_with_the_index_as_fallback(points, names):
    from jobs.plans import sweep_run_names

    assert sweep_run_names("b", points) == names
