"""Two CPU ranks under torchrun (gloo) run the real entry points: rank 0 alone writes the run and MLflow."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lib.engine import load_checkpoint
from lib.io.atomic import temporary_files
from lib.io.run_files import MLFLOW_RUN_ID_NAME
from tests.fixtures_e2e import (  # noqa: F401 (fixtures)
    REPO, E2EData, e2e_data, inp_args, mae_args, mlflow_runs, read_history, reg_args, save_dir,
)

N_RANKS = 2
TIMEOUT_S = 180
DDP_BATCH = ("--batch_size", "8")  # the 16 validation events split into 8 per rank


def _torchrun(module: str, args: list[str], plots: bool = True) -> None:
    """Run `python -m module args` on N_RANKS local ranks (`plots`: draw them); fails the test with the output
    tail on error."""
    entry = ["-m", module] if plots else [str(REPO / "tests" / "recipes" / "no_plots.py"), module]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={N_RANKS}",
               *entry, *args]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {"OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def _assert_one_run_written_by_rank_0(save_dir: Path, run_name: str, epochs: int) -> None:
    run_dirs = [p.name for p in save_dir.iterdir() if (p / "config.yaml").is_file()]
    assert run_dirs == [run_name]
    run_dir = save_dir / run_name
    history = read_history(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, epochs + 1))
    assert not [p for d in [run_dir, *run_dir.rglob("*")] for p in temporary_files(d)], "temporary files left behind"
    assert (run_dir / "DONE").is_file()
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert len(last["rank_states"]) == N_RANKS and last["epoch"] == epochs

    runs = mlflow_runs(save_dir)
    assert [r.info.run_id for r in runs] == [(run_dir / MLFLOW_RUN_ID_NAME).read_text().strip()]
    assert last["mlflow_run_id"] in (None, runs[0].info.run_id)  # recorded once known (tracking is asynchronous)
    assert runs[0].info.status == "FINISHED"


def test_two_rank_mae_run(e2e_data: E2EData, save_dir):
    epochs = 2
    _torchrun("lib.train_mae", mae_args(e2e_data, save_dir, "ddp_mae", "--epochs", str(epochs), *DDP_BATCH))
    _assert_one_run_written_by_rank_0(save_dir, "ddp_mae", epochs)
    assert (save_dir / "ddp_mae" / "predictions" / "mae_predictions_val.root").is_file()


@pytest.mark.slow
def test_two_rank_regressor_run(e2e_data: E2EData, save_dir):
    _torchrun("lib.train_regressor", reg_args(e2e_data, save_dir, "ddp_reg", "--epochs", "1", *DDP_BATCH))
    _assert_one_run_written_by_rank_0(save_dir, "ddp_reg", 1)
    metrics = json.loads((save_dir / "ddp_reg" / "metrics.json").read_text())
    assert "E_rel_w68_pct" in metrics["regressor"]


def test_two_rank_regressor_run_quick(e2e_data: E2EData, save_dir):
    """The fast version in every `make test`: one step per rank, no baseline."""
    args = reg_args(e2e_data, save_dir, "ddp_reg_quick", "--epochs", "1", *DDP_BATCH, "--set", "data.max_events=16",
                    "--set", "baseline.enabled=false")
    _torchrun("lib.train_regressor", args, plots=False)
    _assert_one_run_written_by_rank_0(save_dir, "ddp_reg_quick", 1)
    metrics = json.loads((save_dir / "ddp_reg_quick" / "metrics.json").read_text())
    history = read_history(save_dir / "ddp_reg_quick")
    assert metrics["regressor"]["E_rel_w68_pct"] == pytest.approx(history[0]["val/E_rel_w68_pct"], rel=1e-6)


def test_two_rank_inpainter_run_with_dead_patterns(e2e_data: E2EData, save_dir, tmp_path):
    dead = tmp_path / "dead.txt"
    dead.write_text("1 3\n1 4000\n2 17\n2 4700\n")
    args = inp_args(e2e_data, save_dir, "ddp_inp", "--epochs", "1", *DDP_BATCH, "--mask_mode", "mixed",
                    "--dead_channels", str(dead))
    _torchrun("lib.train_inpainter", args, plots=False)
    _assert_one_run_written_by_rank_0(save_dir, "ddp_inp", 1)
    assert (save_dir / "ddp_inp" / "predictions" / "inpainter_predictions_val.root").is_file()
