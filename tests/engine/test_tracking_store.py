"""A sqlite tracking database interrupted while MLflow builds it must not be left half-built."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lib.engine.tracking_store import ensure_sqlite_store

BUILD = "import sys; from lib.engine.tracking_store import ensure_sqlite_store; ensure_sqlite_store(sys.argv[1])"


def _open_and_create_run(uri: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("e")
    return client.create_run(experiment_id).info.run_id


def _being_built(directory: Path) -> bool:
    """A database file (the target or its temporary) that already holds some of the schema."""
    return any(p.stat().st_size > 0 for p in directory.iterdir() if p.name.endswith((".db", ".tmp")))


def test_a_store_killed_while_being_built_leaves_nothing_and_the_next_start_builds_it(tmp_path):
    db = tmp_path / "mlflow.db"
    uri = f"sqlite:///{db}"
    build = subprocess.Popen([sys.executable, "-c", BUILD, uri], cwd=Path(__file__).parents[2])
    deadline = time.monotonic() + 120
    while not _being_built(tmp_path) and build.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert build.poll() is None, "the build ended before it could be interrupted"
    os.kill(build.pid, signal.SIGKILL)
    build.wait()
    assert not db.exists(), "a half-built database was left where the next run opens it"
    ensure_sqlite_store(uri)
    assert _open_and_create_run(uri)


def test_an_existing_store_is_kept(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_sqlite_store(uri)
    run_id = _open_and_create_run(uri)
    ensure_sqlite_store(uri)
    from mlflow.tracking import MlflowClient

    assert MlflowClient(tracking_uri=uri).get_run(run_id).info.run_id == run_id


@pytest.mark.parametrize("uri", ["file:///nowhere/mlruns", "http://localhost:1"])
def test_other_stores_are_left_to_mlflow(uri, tmp_path):
    ensure_sqlite_store(uri)
    assert list(tmp_path.iterdir()) == []
