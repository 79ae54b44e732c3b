"""Job knobs, run-dir names, launch commands, sweep points and the shell wrappers (no SLURM needed)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from jobs.knobs import KNOBS, JobError, resolve_knobs, slurm_time_minutes
from jobs.launch import LaunchSpec, launch_command, launch_environment
from jobs.plans import sweep_points
from lib.config import ConfigError, SlurmConfig

REPO = Path(__file__).resolve().parents[2]
WRAPPERS = {"run_mae.sh": "mae", "run_regressor.sh": "regressor", "run_inpainter.sh": "inpainter",
            "run_chain.sh": "chain", "run_sweep.sh": "sweep"}


@pytest.mark.parametrize("text, seconds", [
    ("90", 90 * 60), ("1:30", 90), ("02:00:00", 2 * 3600), ("1-00:00:00", 86400), ("2-12", 2 * 86400 + 12 * 3600),
    ("1-2:30", 86400 + 2 * 3600 + 30 * 60), ("0:0:59", 59), ("3-04:05:06", 3 * 86400 + 4 * 3600 + 5 * 60 + 6),
])
def test_slurm_time_minutes_rounds_up(text, seconds):
    assert slurm_time_minutes(text) == (seconds + 59) // 60


def test_slurm_time_minutes_rejects_garbage():
    with pytest.raises(JobError, match="HH:MM:SS"):
        slurm_time_minutes("tomorrow")


def test_flag_beats_environment_and_empty_env_is_unset():
    knobs = resolve_knobs({"time": "1:00:00", "partition": None}, {"TIME": "2:00:00", "PARTITION": "", "QOS": "hi"})
    assert knobs.config_values == {"slurm.time": "1:00:00", "slurm.qos": "hi"}
    assert knobs.sources["slurm.time"].startswith("flag --time")
    assert knobs.sources["slurm.qos"].startswith("environment variable QOS")


def test_environment_values_are_typed_by_the_schema():
    knobs = resolve_knobs({}, {"NUM_GPUS": "4", "NODES": "2", "DRY_RUN": "1", "CPU_PROCS": "3", "EXECUTOR": "local"})
    assert knobs.config_values == {"slurm.num_gpus": 4, "slurm.nodes": 2}
    assert (knobs.options.dry_run, knobs.options.cpu_procs, knobs.options.executor) == (True, 3, "local")


@pytest.mark.parametrize("env, expected", [
    ({"TIME": "ten hours"}, r"environment variable TIME=ten hours.*SLURM time"),
    ({"NUM_GPUS": "0"}, r"NUM_GPUS=0.*CPU_PROCS"),
    ({"NUM_GPUS": "four"}, r"slurm\.num_gpus \(environment variable NUM_GPUS=four\)"),
    ({"RUN_NAME": "a/b"}, r"RUN_NAME=a/b.*plain folder name"),
    ({"RUN_NAME": "my run"}, r"RUN_NAME=my run.*no slash, no spaces"),
    ({"MEM": "lots"}, r"MEM=lots.*128G"),
    ({"EXECUTOR": "cloud"}, r"EXECUTOR=cloud.*'auto', 'slurm' or 'local'"),
    ({"DRY_RUN": "maybe"}, r"DRY_RUN=maybe"),
    ({"CPU_PROCS": "0"}, r"CPU_PROCS=0"),
])
def test_bad_knobs_name_their_variable(env, expected):
    with pytest.raises(ConfigError, match=expected):
        resolve_knobs({}, env)


def test_bad_flag_names_the_flag():
    with pytest.raises(ConfigError, match="flag --num-gpus=x"):
        resolve_knobs({"num_gpus": "x"}, {})


def _spec(**kw) -> LaunchSpec:
    return LaunchSpec(**{"entry": "lib.train_mae", "config": "/runs/a/config.yaml", "workdir": "/w",
                         "procs_per_node": 1, "grace_s": 45, **kw})


def test_launch_command_single_process_runs_the_entry_point():
    assert launch_command(_spec(), python="py") == ["py", "-m", "lib.train_mae", "--config", "/runs/a/config.yaml"]


def test_launch_command_one_node_uses_standalone_torchrun():
    command = launch_command(_spec(procs_per_node=4), python="py")
    assert command[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in command and "--nproc_per_node=4" in command
    assert command[-4:] == ["-m", "lib.train_mae", "--config", "/runs/a/config.yaml"]


def test_launch_command_several_nodes_rendezvous_on_the_first_host():
    command = launch_command(_spec(procs_per_node=2, nodes=3), node_rank=2, first_host="n01", job_id="4711",
                             python="py")
    assert {"--nnodes=3", "--node_rank=2", "--nproc_per_node=2", "--rdzv_backend=c10d", "--rdzv_id=4711"} <= set(
        command)
    endpoint = next(arg for arg in command if arg.startswith("--rdzv_endpoint="))
    assert re.fullmatch(r"--rdzv_endpoint=n01:\d+", endpoint)
    assert "--rdzv_conf=is_host=0" in command
    assert "--rdzv_conf=is_host=1" in launch_command(_spec(procs_per_node=2, nodes=3), node_rank=0, python="py")


def test_cpu_jobs_hide_gpus_and_torchrun_relays_sigusr1_with_the_grace_as_shutdown_timeout():
    env = launch_environment(_spec(procs_per_node=2, cpu=True), base={})
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    for variable in ("PET_SIGNALS_TO_HANDLE", "TORCHELASTIC_SIGNALS_TO_HANDLE"):
        assert "SIGUSR1" in env[variable].split(",")
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"] == "45"
    assert "CUDA_VISIBLE_DEVICES" not in launch_environment(_spec(), base={})


def test_sweep_grid_is_the_product_of_its_axes():
    points = sweep_points(["training.lr=1e-4,3e-4", "training.mask_ratio=0.5,0.6,0.75"], [])
    expected = [[f"training.lr={lr}", f"training.mask_ratio={m}"] for lr in ("1e-4", "3e-4") for m in
                ("0.5", "0.6", "0.75")]
    assert points == expected


def test_sweep_points_are_split_like_a_shell():
    assert sweep_points([], ["training.lr=1e-4 training.seed=1", "training.lr=3e-4"]) == [
        ["training.lr=1e-4", "training.seed=1"], ["training.lr=3e-4"]]


@pytest.mark.parametrize("grid, points", [([], []), (["training.lr=1"], ["training.lr=2"]), (["training.lr"], [])])
def test_sweep_needs_one_valid_form(grid, points):
    with pytest.raises(JobError):
        sweep_points(grid, points)


@pytest.mark.parametrize("name", sorted(WRAPPERS))
def test_wrapper_is_thin_and_documents_every_knob(name):
    text = (REPO / "jobs" / name).read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert code == ["set -euo pipefail", f'exec "${{PYTHON:-python}}" -m jobs.submit {WRAPPERS[name]} "$@"']
    for knob in KNOBS:
        assert re.search(rf"^#\s+{knob.env}\s.*\[{re.escape(knob.default_text())}\]$", text, re.M), knob.env
    assert re.search(r"^#\s+TIME\s.*\[" + re.escape(SlurmConfig().time) + r"\]$", text, re.M)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_wrappers_are_shellcheck_clean():
    result = subprocess.run(["shellcheck", *(str(REPO / "jobs" / name) for name in WRAPPERS)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_wrapper_passes_arguments_and_python_through(tmp_path):
    fake = tmp_path / "fakepython"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    result = subprocess.run([str(REPO / "jobs" / "run_chain.sh"), "a b.yaml", "--set", "x=1"],
                            env={"PYTHON": str(fake), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert result.stdout.splitlines() == ["-m", "jobs.submit", "chain", "a b.yaml", "--set", "x=1"]
