"""Fixtures of the export tests: a tiny regressor trained for one step, its ONNX export (made once per session).

Import the fixtures a test module uses by name (`from tests.evaluation.export_fixtures import ...`).
The regressor is the demo config's tiny model with all four tasks, energy with a predicted sigma,
so its export has every kind of output (E, sigma_E, t, u, v, w, theta, phi).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from lib import export, train_regressor
from lib.sim.events import SimConfig, simulate_events
from tests.fixtures_e2e import detach_run_logs, e2e_data, isolate_run, new_save_dir, one_thread, reg_args  # noqa: F401

REG_TASKS = "tasks={energy: {loss: gaussian_nll}, timing: null, position: null, angle: null}"
CHECK_EVENTS = 16
ONE_STEP = ("--epochs", "1", "--set", "data.max_events=16", "--set", "data.val_path=null",
            "--set", "mlflow.enabled=false", "--set", REG_TASKS)
"""One training step of 16 events, no validation or tracking."""


@dataclass(frozen=True)
class OnnxExport:
    """The session's ONNX export of `reg_checkpoint` and what the command said."""

    path: Path
    exit_code: int
    log: str


@pytest.fixture(scope="session")
def reg_checkpoint(tmp_path_factory, e2e_data, one_thread) -> Path:
    """last.pt of a tiny regressor (all four tasks, energy with sigma) trained for one step."""
    save_dir = new_save_dir(tmp_path_factory.mktemp("export_reg"), e2e_data)
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch)
        code = train_regressor.main(reg_args(e2e_data, save_dir, "export_reg", *ONE_STEP))
    detach_run_logs()
    assert code == 0
    return save_dir / "export_reg" / "checkpoints" / "last.pt"


def run_export(argv: list[str]) -> tuple[int, str]:
    """Run `python -m lib.export` in-process; (exit code, everything lib logged at INFO and above)."""
    handler, logger = _ListHandler(), logging.getLogger("lib")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        code = export.main(argv)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return code, "\n".join(handler.messages)


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory, reg_checkpoint) -> Iterator[OnnxExport]:
    """`lib.export --format onnx` of the tiny regressor with its parity check on simulated events."""
    out = tmp_path_factory.mktemp("onnx_export") / "regressor.onnx"
    code, text = run_export(["--checkpoint", str(reg_checkpoint), "--format", "onnx", "--out", str(out),
                             "--events", str(CHECK_EVENTS)])
    yield OnnxExport(out, code, text)


def write_event_file(path: Path, n_events: int, seed: int, n_sensors: int | None = None) -> Path:
    """npz data file of simulated events (the simulation's dead channels included); `n_sensors` cuts the
    sensor arrays to make a file of another detector."""
    events = simulate_events(SimConfig(), n_events, np.random.default_rng(seed))
    if n_sensors is not None:
        events["npho"], events["relative_time"] = events["npho"][:, :n_sensors], events["relative_time"][:, :n_sensors]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **events)
    return path
