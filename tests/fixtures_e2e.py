"""Shared fixtures and helpers of the end-to-end tests (MAE pretraining, regressor fine-tuning, transfer, DDP).

Import the fixtures a test module uses by name (`from tests.fixtures_e2e import e2e_data, ...`):
pytest then finds them there. Everything is tiny: a simulated data set of 32 training events
(2 ROOT shards) and 16 validation events, the `tiny` model, batches of 16, no loader workers.
"""
from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import pytest
import torch

from lib.sim.events import SimConfig, simulate_events, write_shards
from lib.io.run_files import LOG_NAME

REPO = Path(__file__).resolve().parents[1]
MAE_CONFIG = REPO / "config" / "mae" / "mae_demo.yaml"
REG_CONFIG = REPO / "config" / "reg" / "reg_demo.yaml"
TRAIN_EVENTS, TRAIN_SHARDS, VAL_EVENTS, BATCH = 32, 2, 16, 16
STEPS_PER_EPOCH = TRAIN_EVENTS // BATCH
MLFLOW_DB = "mlflow.db"


@dataclass(frozen=True)
class E2EData:
    """Paths of the tiny simulated data set and of an empty MLflow database to copy per run."""

    train: Path
    val: Path
    mlflow_template: Path


def _empty_mlflow_db(path: Path) -> Path:
    """Create an MLflow sqlite store once (its schema migration takes seconds; copying it takes none)."""
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def e2e_data(tmp_path_factory) -> E2EData:
    """Simulated ROOT shards (32 train events in 2 shards, 16 val events) and an empty MLflow store."""
    root = tmp_path_factory.mktemp("e2e_data")
    write_shards(SimConfig(), root / "train", TRAIN_EVENTS, TRAIN_SHARDS, "root", seed=1)
    write_shards(SimConfig(), root / "val", VAL_EVENTS, 1, "root", seed=2)
    return E2EData(root / "train", root / "val", _empty_mlflow_db(root / MLFLOW_DB))


def new_save_dir(parent: Path, data: E2EData) -> Path:
    """A fresh save_dir holding a copy of the empty MLflow store (the default URI's sqlite file)."""
    save_dir = parent / "runs"
    save_dir.mkdir(parents=True)
    shutil.copyfile(data.mlflow_template, save_dir / MLFLOW_DB)
    return save_dir


def detach_run_logs() -> None:
    """Close the train.log handlers a run attached to the root logger (in-process runs leave them)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if Path(getattr(h, "baseFilename", "")).name == LOG_NAME]:
        root.removeHandler(handler)
        handler.close()


@pytest.fixture(scope="session")
def one_thread() -> Iterator[None]:
    """Pin torch to one thread: stable timing on a shared machine and bit-reproducible CPU runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def isolate_run(patch: pytest.MonkeyPatch, plots: bool = False) -> None:
    """Runs use the sqlite MLflow store under their save_dir (no URI from the environment) and, unless
    `plots`, skip drawing PNGs (seconds per run; the e2e runs that check plots keep them)."""
    import lib.plots

    patch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if not plots:
        patch.setattr(lib.plots, "plot_learning_curves", lambda *args, **kwargs: [])
        patch.setattr(lib.plots, "make_regression_plots", lambda *args, **kwargs: [])


@pytest.fixture
def e2e_env(one_thread, monkeypatch) -> Iterator[None]:
    """Every e2e test: one torch thread, `isolate_run` without plots; run logs detached after the test."""
    isolate_run(monkeypatch)
    yield
    detach_run_logs()


@pytest.fixture
def save_dir(tmp_path, e2e_data) -> Path:
    """Per-test save_dir with its own MLflow store."""
    return new_save_dir(tmp_path, e2e_data)


def common_args(config: Path, data: E2EData, save_dir: Path, run_name: str) -> list[str]:
    """Command-line arguments shared by every tiny run (data, batch, save_dir, logging each step)."""
    return [
        "--config", str(config), "--train_path", str(data.train), "--val_path", str(data.val),
        "--batch_size", str(BATCH), "--num_workers", "0", "--save_dir", str(save_dir), "--run_name", run_name,
        "--set", "training.log_every=1",
    ]


def mae_args(data: E2EData, save_dir: Path, run_name: str, *extra: str) -> list[str]:
    """Arguments of a tiny MAE run (demo config, validation predictions limited to the val set)."""
    return [*common_args(MAE_CONFIG, data, save_dir, run_name),
            "--set", f"training.num_val_predictions={VAL_EVENTS}", *extra]


def reg_args(data: E2EData, save_dir: Path, run_name: str, *extra: str) -> list[str]:
    """Arguments of a tiny regressor run (demo config: energy + position, baseline on 32 events)."""
    return [*common_args(REG_CONFIG, data, save_dir, run_name), "--set", "baseline.fit_events=32", *extra]


@dataclass(frozen=True)
class MAERun:
    """A finished tiny MAE run shared by the tests that only read it."""

    run_dir: Path
    save_dir: Path
    exit_code: int
    epochs: int


@pytest.fixture(scope="session")
def mae_run(tmp_path_factory, e2e_data, one_thread) -> Iterator[MAERun]:
    """A 3-epoch tiny MAE run (lr 3e-3), trained once per session; tests must not modify it."""
    from lib import train_mae

    epochs = 3
    save_dir = new_save_dir(tmp_path_factory.mktemp("mae_run"), e2e_data)
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch, plots=True)
        code = train_mae.main(mae_args(e2e_data, save_dir, "mae_e2e", "--epochs", str(epochs), "--lr", "3e-3"))
    detach_run_logs()
    yield MAERun(save_dir / "mae_e2e", save_dir, code, epochs)


@pytest.fixture(scope="session")
def reg_checkpoint(tmp_path_factory, e2e_data, one_thread) -> Path:
    """last.pt of a 1-epoch tiny regressor (energy + position, 2 steps, no validation) trained once per
    session on the simulated data; its run directory holds config.yaml. Tests must not modify it."""
    from lib import train_regressor

    save_dir = new_save_dir(tmp_path_factory.mktemp("reg_ckpt"), e2e_data)
    cheap = ["--epochs", "1", "--set", "data.val_path=null", "--set", "mlflow.enabled=false"]
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch)
        assert train_regressor.main([*reg_args(e2e_data, save_dir, "reg"), *cheap]) == 0
    detach_run_logs()
    return save_dir / "reg" / "checkpoints" / "last.pt"


def tree_listing(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """{relative path: (mtime_ns, size, content)} of every file under `root` (to prove nothing changed)."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size, p.read_bytes())
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_npz_shard(path: Path, n_events: int, seed: int, drop: tuple[str, ...] = (),
                    nan_energy_rows: tuple[int, ...] = (), fill_energy_rows: tuple[int, ...] = ()) -> Path:
    """Simulated npz shard, optionally without the branches `drop` or with energyTruth NaN / the fill
    value 1e10 at some rows."""
    events = simulate_events(SimConfig(), n_events, np.random.default_rng(seed))
    events["energyTruth"][list(nan_energy_rows)] = np.nan
    events["energyTruth"][list(fill_energy_rows)] = 1e10
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **{k: v for k, v in events.items() if k not in drop})
    return path


def differing_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that differ (or exist in only one of the two state dicts)."""
    return sorted(k for k in a.keys() | b.keys() if k not in a or k not in b or not torch.equal(a[k], b[k]))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The records of a run's training_history.json."""
    return json.loads((run_dir / "training_history.json").read_text())


def mlflow_client(save_dir: Path) -> Any:
    """MlflowClient of the default store of `save_dir` (sqlite:///<save_dir>/mlflow.db)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{save_dir}/{MLFLOW_DB}")


def mlflow_runs(save_dir: Path) -> list[Any]:
    """Every MLflow run in the default store of `save_dir`, over all experiments."""
    client = mlflow_client(save_dir)
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


EntryPoint = Callable[[Sequence[str]], int]


def refused_message(main: EntryPoint, caplog: pytest.LogCaptureFixture, argv: list[str]) -> str:
    """Run `main(argv)`, expect exit code 2 and return the error it logged."""
    with caplog.at_level(logging.ERROR, logger="lib.engine.run"):
        assert main(argv) == 2
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR)


def refused_at_parse_message(main: EntryPoint, capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run `main(argv)`, expect the config parser to exit with status 2 and return what it printed to stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err
