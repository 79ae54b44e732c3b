"""MLflow tracking: params and metrics land in the store, resumes continue the run without duplicates, and a
store that is down, hangs or comes back never holds training up (real sqlite stores, real sockets)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch

from lib.engine import Trainer, load_checkpoint, prepare_run_dir
from lib.engine.distributed import DistInfo
from lib.engine.preemption import Preempted
from lib.engine.tracking import PARENT_CHECKPOINT_TAG, PARENT_RUN_TAG, start_tracking
from lib.io.run_files import MLFLOW_RUN_ID_NAME, MLFLOW_SPOOL_NAME
from tests.engine.ddp_worker import Interrupted, ToyLoader, ToyModel, ToyTask, toy_config, toy_data
from tests.engine.toy_run import toy_trainer

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
REPO = Path(__file__).resolve().parents[2]
STEP_KEYS = {"step/loss", "step/lr", "step/events_per_s", "step/data_wait", "step/grad_norm"}


class SignallingTask(ToyTask):
    """Sends SIGTERM to this process in training step `at_step`."""

    def __init__(self, at_step: int) -> None:
        super().__init__()
        self.at_step = at_step

    def training_step(self, model, batch, step):
        if step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return super().training_step(model, batch, step)


def _fit(cfg, resuming: bool, task: ToyTask | None = None) -> dict:
    x, y = toy_data(16)
    vx, vy = toy_data(4, seed=3)
    trainer = Trainer(cfg, ToyModel(), task or ToyTask(), ToyLoader(x, y, 4), ToyLoader(vx, vy, 4, shuffle=False),
                      prepare_run_dir(cfg, CPU, resuming), CPU)
    return trainer.fit()


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


@pytest.fixture(scope="module")
def store_template(tmp_path_factory) -> Path:
    """An empty, migrated sqlite MLflow store to copy (migrating one takes seconds)."""
    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    _client(f"sqlite:///{path}").search_experiments()
    return path


def _sqlite_store(directory: Path, template: Path) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, directory / "mlflow.db")
    return f"sqlite:///{directory / 'mlflow.db'}"


def _closed_port_uri() -> str:
    """An http URI where nothing listens (connections are refused at once)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def hanging_server_uri():
    """An http URI whose server accepts connections (the kernel's backlog) and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()


def _logged_steps(client, run_id: str) -> dict[str, list[int]]:
    metrics = client.get_run(run_id).data.metrics
    return {key: sorted(m.step for m in client.get_metric_history(run_id, key)) for key in metrics}


def test_mlflow_records_the_run_and_a_resume_continues_it(tmp_path, store_template):
    uri = _sqlite_store(tmp_path, store_template)
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": uri, "experiment": "engine-test"},
                     checkpoint={"auto_resume": True})
    with pytest.raises(Interrupted):
        _fit(cfg, resuming=False, task=ToyTask(interrupt_at_step=4))  # 4 steps per epoch: stops in epoch 2
    run_id = (tmp_path / "toy" / MLFLOW_RUN_ID_NAME).read_text().strip()
    client = _client(uri)
    assert client.get_run(run_id).info.status == "FAILED"

    result = _fit(cfg, resuming=True)
    assert result["mlflow_run_id"] == run_id == load_checkpoint(tmp_path / "toy/checkpoints/last.pt")["mlflow_run_id"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "toy"
    assert run.data.params["training.epochs"] == "2" and run.data.params["checkpoint.save_dir"] == str(tmp_path)
    history = json.loads((tmp_path / "toy" / "training_history.json").read_text())
    assert [m.value for m in client.get_metric_history(run_id, "val/loss")] == [r["val/loss"] for r in history]
    assert _logged_steps(client, run_id)["step/loss"] == [2, 4, 6, 8]  # log_every 2, 8 steps
    assert {"config.yaml", "training_history.json"} <= {a.path for a in client.list_artifacts(run_id)}
    assert any((tmp_path / "mlartifacts").rglob("config.yaml"))  # artifacts beside the db, not in ./mlruns


def test_kill_9_then_resume_logs_every_step_once(tmp_path, store_template):
    uri = _sqlite_store(tmp_path, store_template)
    options = {"sections": {"training": {"epochs": 1, "log_every": 1}, "checkpoint": {"save_every_steps": 2,
                                                                                        "auto_resume": True},
                            "mlflow": {"enabled": True, "tracking_uri": uri}},
               "kill_at_step": 5}  # last.pt holds step 4; MLflow holds step 5 when the process dies
    killed = subprocess.run([sys.executable, str(REPO / "tests/engine/toy_run.py"), str(tmp_path), json.dumps(options)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    run_id = (tmp_path / "toy" / MLFLOW_RUN_ID_NAME).read_text().strip()
    assert load_checkpoint(tmp_path / "toy/checkpoints/last.pt")["global_step"] == 4
    assert _logged_steps(_client(uri), run_id)["step/loss"] == [1, 2, 3, 4, 5]

    del options["kill_at_step"]
    assert toy_trainer(tmp_path, options).fit()["mlflow_run_id"] == run_id
    logged = _logged_steps(_client(uri), run_id)
    assert {key: steps for key, steps in logged.items() if key in STEP_KEYS} == {
        key: list(range(1, 9)) for key in STEP_KEYS}
    assert logged["val/loss"] == [8]


@pytest.mark.timeout(90)
def test_a_store_that_is_down_costs_nothing_and_its_metrics_are_replayed_on_resume(tmp_path, store_template):
    sections = {"training": {"epochs": 2}, "checkpoint": {"save_every_steps": 1, "auto_resume": True}}
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": _closed_port_uri(), "timeout_s": 1},
                     **sections)
    with pytest.raises(Interrupted):
        _fit(cfg, resuming=False, task=ToyTask(interrupt_at_step=5))  # steps 1-5 done, step 6 fails
    spooled = Counter((entry["key"], entry["step"]) for entry in map(
        json.loads, (tmp_path / "toy" / MLFLOW_SPOOL_NAME).read_text().splitlines()))
    assert {step for key, step in spooled if key == "step/loss"} == {2, 4} and max(spooled.values()) == 1

    uri = _sqlite_store(tmp_path / "back", store_template)  # the store answers again (here: another one)
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": uri}, **sections)
    run_id = _fit(cfg, resuming=True)["mlflow_run_id"]
    assert _logged_steps(_client(uri), run_id)["step/loss"] == [2, 4, 6, 8]
    assert not (tmp_path / "toy" / MLFLOW_SPOOL_NAME).exists()


@pytest.mark.timeout(60)
def test_a_hanging_store_neither_delays_training_nor_the_preemption_path(tmp_path, hanging_server_uri):
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": hanging_server_uri, "timeout_s": 1},
                     training={"epochs": 50}, checkpoint={"auto_resume": True})
    started = time.monotonic()
    with pytest.raises(Preempted, match="preempted at global step 2"):
        _fit(cfg, resuming=False, task=SignallingTask(at_step=1))
    assert time.monotonic() - started < 15  # one epoch of training + about 2 timeouts (a hang of 120 s before)
    assert (tmp_path / "toy" / MLFLOW_SPOOL_NAME).is_file()


@pytest.mark.timeout(60)
def test_metrics_wait_while_the_store_is_away_and_are_sent_when_it_returns(tmp_path, store_template):
    blocker = tmp_path / "store"
    blocker.write_text("a file where the store's directory should be")  # opening the store fails
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": f"sqlite:///{blocker / 'mlflow.db'}"})
    spool = tmp_path / "toy" / MLFLOW_SPOOL_NAME
    tracker = start_tracking(cfg, {"training": {"lr": 0.1}}, None, is_main=True)
    tracker.begin()
    for step in (1, 2, 3):
        tracker.log_metrics({"step/loss": 1.0 / step}, step)
    deadline = time.monotonic() + 30
    while not (spool.is_file() and len(spool.read_text().splitlines()) == 3) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(spool.read_text().splitlines()) == 3

    blocker.unlink()
    uri = _sqlite_store(blocker, store_template)
    while spool.exists() and time.monotonic() < deadline + 20:
        time.sleep(0.1)
    tracker.end("FINISHED")
    run = _client(uri).get_run(tracker_run_id := (tmp_path / "toy" / MLFLOW_RUN_ID_NAME).read_text().strip())
    assert run.info.status == "FINISHED" and run.data.params["training.lr"] == "0.1"
    assert _logged_steps(_client(uri), tracker_run_id) == {"step/loss": [1, 2, 3]}


def test_a_run_seeded_from_another_run_directory_gets_its_own_mlflow_run(tmp_path, store_template):
    uri = _sqlite_store(tmp_path, store_template)
    tracking = {"enabled": True, "tracking_uri": uri}
    parent = _fit(toy_config(tmp_path, run_name="parent", mlflow=tracking, training={"epochs": 1}), resuming=False)
    seed = tmp_path / "parent" / "checkpoints" / "last.pt"
    child = _fit(toy_config(tmp_path, run_name="child", mlflow={**tracking, "tags": {"sweep": "scan"}},
                            checkpoint={"resume_from": str(seed)}), resuming=True)
    assert child["mlflow_run_id"] != parent["mlflow_run_id"]
    tags = _client(uri).get_run(child["mlflow_run_id"]).data.tags
    assert tags[PARENT_RUN_TAG] == parent["mlflow_run_id"] and tags[PARENT_CHECKPOINT_TAG] == str(seed.resolve())
    assert tags["sweep"] == "scan"  # mlflow.tags beside the parent's
    assert _client(uri).get_run(parent["mlflow_run_id"]).info.status == "FINISHED"
    assert _logged_steps(_client(uri), parent["mlflow_run_id"])["step/loss"] == [2, 4]


class TrackingObserver(ToyTask):
    """Notes in each training step whether the tracking thread has been let go yet."""

    def __init__(self) -> None:
        super().__init__()
        self.trainer: Trainer | None = None
        self.tracking_begun: list[bool] = []

    def training_step(self, model, batch, step):
        self.tracking_begun.append(self.trainer.tracker._worker._begin.is_set())
        return super().training_step(model, batch, step)


def test_tracking_starts_its_work_only_after_the_first_optimizer_step(tmp_path, store_template):
    uri = _sqlite_store(tmp_path, store_template)
    cfg = toy_config(tmp_path, mlflow={"enabled": True, "tracking_uri": uri}, training={"epochs": 1})
    task = TrackingObserver()
    x, y = toy_data(16)
    task.trainer = Trainer(cfg, ToyModel(), task, ToyLoader(x, y, 4), None, prepare_run_dir(cfg, CPU, False), CPU)
    run_id = task.trainer.fit()["mlflow_run_id"]
    assert task.tracking_begun == [False, True, True, True]  # no import or store set-up beside the first step
    assert _logged_steps(_client(uri), run_id)["step/loss"] == [2, 4]
