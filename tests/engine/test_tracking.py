"""MLflow tracking: params/metrics land in the store, resumes continue the run, outages are not fatal."""
from __future__ import annotations

import json
import logging

import pytest
import torch

from lib.engine import Trainer, load_checkpoint, prepare_run_dir
from lib.engine.distributed import DistInfo
from tests.engine.ddp_worker import Interrupted, ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _fit(cfg, resuming: bool, interrupt_at_step: int | None = None) -> dict:
    x, y = toy_data(16)
    vx, vy = toy_data(4, seed=3)
    trainer = Trainer(cfg, ToyModel(), ToyTask(interrupt_at_step=interrupt_at_step), ToyLoader(x, y, 4),
                      ToyLoader(vx, vy, 4, shuffle=False), prepare_run_dir(cfg, CPU, resuming), CPU)
    return trainer.fit()


def test_mlflow_records_the_run_and_a_resume_continues_it(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": uri, "experiment": "engine-test"},
                     checkpoint={"auto_resume": True})
    with pytest.raises(Interrupted):
        _fit(cfg, resuming=False, interrupt_at_step=4)  # 4 steps per epoch: stops at the start of epoch 2
    run_id = load_checkpoint(tmp_path / "toy" / "checkpoints" / "last.pt")["mlflow_run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FAILED"

    result = _fit(cfg, resuming=True)
    assert result["mlflow_run_id"] == run_id
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "toy"
    assert run.data.params["training.epochs"] == "2" and run.data.params["checkpoint.save_dir"] == str(tmp_path)
    history = json.loads((tmp_path / "toy" / "training_history.json").read_text())
    logged = client.get_metric_history(run_id, "val/loss")
    assert [m.value for m in logged] == [r["val/loss"] for r in history]
    assert len(client.get_metric_history(run_id, "step/loss")) == 4  # log_every 2, 8 steps
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "training_history.json"} <= artifacts
    assert any((tmp_path / "mlartifacts").rglob("config.yaml"))  # artifacts beside the db, not in ./mlruns


def test_unreachable_tracking_server_warns_and_training_goes_on(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = toy_config(tmp_path, training={"epochs": 1}, mlflow={"enabled": True, "tracking_uri": "http://127.0.0.1:1"})
    with caplog.at_level(logging.WARNING, logger="lib.engine.tracking"):
        result = _fit(cfg, resuming=False)
    assert "unavailable" in caplog.text and "127.0.0.1:1" in caplog.text
    assert result["mlflow_run_id"] is None and result["epochs_completed"] == 1
    assert len(json.loads((tmp_path / "toy" / "training_history.json").read_text())) == 1
