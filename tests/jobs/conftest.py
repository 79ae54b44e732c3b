"""Fixtures of the job-suite tests without SLURM: tiny configs and main() with the local executor."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from jobs.submit import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def workspace(tmp_path, shard_dir, monkeypatch):
    """A tiny MAE and regressor config on the shared shards, runs under tmp_path/runs; cwd = repo root."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    common = {"data": {"train_path": str(shard_dir), "val_path": str(shard_dir)}, "model": {"preset": "tiny"},
              "training": {"epochs": 3}, "checkpoint": {"save_dir": str(runs)}}
    mae, reg = tmp_path / "mae.yaml", tmp_path / "reg.yaml"
    mae.write_text(yaml.safe_dump({**common, "checkpoint": {**common["checkpoint"], "run_name": "pre"}}))
    reg.write_text(yaml.safe_dump({**common, "checkpoint": {**common["checkpoint"], "run_name": "fine"}}))
    return {"mae": str(mae), "reg": str(reg), "runs": runs, "tmp": tmp_path}


@pytest.fixture
def slurm_workspace(tmp_path, shard_dir, monkeypatch):
    """--set overrides of a tiny run of the demo configs on the shared shards (runs and MLflow sqlite in
    tmp_path/runs), for the real-SLURM tests."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    overrides = [f"data.train_path={shard_dir}", f"data.val_path={shard_dir}", f"checkpoint.save_dir={runs}",
                 "data.num_workers=0", "data.max_events=64", "data.max_val_events=64", "training.epochs=1",
                 "training.num_val_predictions=0"]
    encoder = tmp_path / "encoder_best.pt"
    encoder.write_text("placeholder for dry runs")
    return {"runs": runs, "sets": [arg for item in overrides for arg in ("--set", item)], "encoder": encoder}


@pytest.fixture
def submit(capsys):
    """main(argv, env) with EXECUTOR=local and CPU_PROCS=1 unless `env` says otherwise -> (code, stdout, stderr)."""
    def run(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str, str]:
        code = main(argv, {"EXECUTOR": "local", "CPU_PROCS": "1", **(env or {})})
        out, err = capsys.readouterr()
        return code, out, err

    return run
