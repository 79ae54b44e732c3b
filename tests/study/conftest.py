"""Fixtures of the study tests: a tiny regressor config on the shared shards, runs and MLflow under tmp_path."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def study_workspace(tmp_path, shard_dir, monkeypatch):
    """reg.yaml (tiny preset, batch 4, energy task, MLflow in tmp_path/runs/mlflow.db), a placeholder encoder
    file; cwd = repo root."""
    monkeypatch.chdir(REPO)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs = tmp_path / "runs"
    config = {"data": {"train_path": str(shard_dir), "val_path": str(shard_dir), "batch_size": 4, "num_workers": 0,
                       "in_memory": True},
              "model": {"preset": "tiny"}, "tasks": ["energy"],
              "training": {"epochs": 2, "warmup_epochs": 0.5, "num_val_predictions": 0},
              "checkpoint": {"save_dir": str(runs), "run_name": "reg"},
              "mlflow": {"experiment": "study_test"}}
    reg = tmp_path / "reg.yaml"
    reg.write_text(yaml.safe_dump(config))
    encoder = tmp_path / "encoder_best.pt"
    encoder.write_text("placeholder (the stand-in trainer does not read it)")
    return {"reg": str(reg), "runs": runs, "encoder": str(encoder), "tmp": tmp_path}
