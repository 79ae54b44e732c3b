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
from tests.fixtures_e2e import (  # noqa: F401 (fixtures)
    REPO, E2EData, e2e_data, mae_args, mlflow_runs, read_history, reg_args, save_dir,
)

N_RANKS = 2
TIMEOUT_S = 180
DDP_BATCH = ("--batch_size", "8")  # the 16 validation events split into 8 per rank


def _torchrun(module: str, args: list[str]) -> None:
    """Run `python -m module args` on N_RANKS local ranks; fails the test with the output tail on error."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={N_RANKS}",
               "-m", module, *args]
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
    assert [r.info.run_id for r in runs] == [last["mlflow_run_id"]]
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
