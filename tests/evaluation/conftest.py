"""Session fixtures of the export tests: a tiny regressor and a tiny MAE trained for one step, and the
regressor's ONNX export (each made once per session; defined here so every test module shares them)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from lib import train_mae, train_regressor
from tests.evaluation.export_helpers import CHECK_EVENTS, ONE_STEP, REG_TASKS, OnnxExport, run_export
from tests.fixtures_e2e import (
    E2EData, detach_run_logs, e2e_data, isolate_run, mae_args, new_save_dir, one_thread, reg_args,  # noqa: F401
)


def _train(main, argv_of, factory, data: E2EData, name: str, *extra: str) -> Path:
    save_dir = new_save_dir(factory.mktemp(name), data)
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch)
        code = main(argv_of(data, save_dir, name, *ONE_STEP, *extra))
    detach_run_logs()
    assert code == 0
    return save_dir / name


@pytest.fixture(scope="session")
def export_reg_checkpoint(tmp_path_factory, e2e_data, one_thread) -> Path:
    """last.pt of a tiny regressor (all four tasks, energy with sigma) trained for one step."""
    return _train(train_regressor.main, reg_args, tmp_path_factory, e2e_data, "export_reg",
                  "--set", REG_TASKS) / "checkpoints" / "last.pt"


@pytest.fixture(scope="session")
def mae_run_dir(tmp_path_factory, e2e_data, one_thread) -> Path:
    """Run directory of a tiny MAE trained for one step (checkpoints/last.pt, encoder_last.pt)."""
    return _train(train_mae.main, mae_args, tmp_path_factory, e2e_data, "export_mae")


@pytest.fixture(scope="session")
def onnx_export(tmp_path_factory, export_reg_checkpoint) -> Iterator[OnnxExport]:
    """`lib.export --format onnx` of the tiny regressor with its parity check on simulated events."""
    out = tmp_path_factory.mktemp("onnx_export") / "regressor.onnx"
    code, text = run_export(["--checkpoint", str(export_reg_checkpoint), "--format", "onnx", "--out", str(out),
                             "--events", str(CHECK_EVENTS)])
    yield OnnxExport(out, code, text)
