"""Helpers of the export tests (the session fixtures are in tests/evaluation/conftest.py).

The regressor there is the demo config's tiny model with all four tasks, energy with a predicted
sigma (`REG_TASKS`), so its export has every kind of output (E, sigma_E, t, u, v, w, theta, phi).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lib import export
from lib.sim.events import SimConfig, simulate_events

REG_TASKS = "tasks={energy: {loss: gaussian_nll}, timing: null, position: null, angle: null}"
CHECK_EVENTS = 16
ONE_STEP = ("--epochs", "1", "--set", "data.max_events=16", "--set", "data.val_path=null",
            "--set", "mlflow.enabled=false")
"""One training step of 16 events, no validation or tracking."""


@dataclass(frozen=True)
class OnnxExport:
    """The session's ONNX export of the `export_reg_checkpoint` fixture and what the command said."""

    path: Path
    exit_code: int
    log: str


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


def write_event_file(path: Path, n_events: int, seed: int, n_sensors: int | None = None) -> Path:
    """npz data file of simulated events (the simulation's dead channels included); `n_sensors` cuts the
    sensor arrays to make a file of another detector."""
    events = simulate_events(SimConfig(), n_events, np.random.default_rng(seed))
    if n_sensors is not None:
        events["npho"], events["relative_time"] = events["npho"][:, :n_sensors], events["relative_time"][:, :n_sensors]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **events)
    return path
