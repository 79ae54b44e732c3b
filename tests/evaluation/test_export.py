"""`python -m lib.export`: ONNX / TorchScript files with metadata and a passing parity check, and refusals."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import lib.evaluation.inference_graph
from lib.config import RegressorConfig, load_resolved
from lib.engine import load_checkpoint
from lib.engine.checkpoint import save_checkpoint
from lib.evaluation.export_check import RELATIVE_TOLERANCE, simulated_events
from lib.evaluation.exported_model import EXPORT_EXTRA_HINT, ExportError, load_exported_model
from lib.export import sha256_of, sidecar_path
from lib.io.atomic import temporary_files
from lib.normalization import describe, time_forward
from tests.evaluation.export_helpers import CHECK_EVENTS, run_export, write_event_file

OUTPUTS = ["E", "sigma_E", "t", "u", "v", "w", "theta", "phi"]
UNITS = {"E": "GeV", "sigma_E": "GeV", "t": "s", "u": "cm", "v": "cm", "w": "cm", "theta": "deg", "phi": "deg"}


def _raw_events(n: int) -> tuple[np.ndarray, np.ndarray]:
    return simulated_events(n, seed=5)


def _export(checkpoint: Path, out: Path, fmt: str = "torchscript", *extra: str) -> tuple[int, str]:
    return run_export(["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out),
                       "--events", str(CHECK_EVENTS), *extra])


def _assert_nothing_written(out: Path) -> None:
    assert not out.exists() and not sidecar_path(out).exists()
    assert temporary_files(out.parent) == []


# ----------------------------------------------------------------------------------------- exports
def test_onnx_export_passes_its_parity_check_and_describes_itself(onnx_export, export_reg_checkpoint):
    assert onnx_export.exit_code == 0, onnx_export.log
    for output in OUTPUTS:  # the command prints the max difference of every output
        assert f"parity {output} " in onnx_export.log
    model = load_exported_model(onnx_export.path)
    cfg = load_resolved(load_checkpoint(export_reg_checkpoint)["config"], RegressorConfig)
    meta = model.metadata
    assert model.output_names == OUTPUTS
    assert {o["name"]: o["unit"] for o in meta["outputs"]} == UNITS
    assert meta["normalization"] == describe(cfg.normalization)
    assert list(meta["tasks"]) == ["energy", "timing", "position", "angle"]
    assert meta["run_name"] == "export_reg" and meta["weights"] == "raw"
    assert meta["checkpoint"] == str(export_reg_checkpoint.resolve())
    assert meta["checkpoint_sha256"] == sha256_of(export_reg_checkpoint)

    sidecar = json.loads(sidecar_path(onnx_export.path).read_text())
    assert {k: v for k, v in sidecar.items() if k in meta} == meta  # the file's metadata, plus the check
    assert sidecar["file_sha256"] == sha256_of(onnx_export.path)
    check = sidecar["parity_check"]
    assert check["passed"] and check["events"] == 2 * CHECK_EVENTS  # the events and their dead-channel copies
    assert set(check["outputs"]) == set(OUTPUTS)
    for figures in check["outputs"].values():
        assert max(figures["max_abs_diff"].values()) <= RELATIVE_TOLERANCE * figures["scale_rms"]


def test_onnx_export_has_a_dynamic_batch(onnx_export):
    model = load_exported_model(onnx_export.path)
    npho, time = _raw_events(5)
    one_by_one = [model(npho[i : i + 1], time[i : i + 1]) for i in range(5)]
    together = model(npho, time)
    for name in OUTPUTS:
        rms = float(np.sqrt(np.mean(together[name].astype(np.float64) ** 2)))
        np.testing.assert_allclose(np.concatenate([o[name] for o in one_by_one]), together[name], rtol=0,
                                   atol=RELATIVE_TOLERANCE * rms)


def test_torchscript_export_passes_its_parity_check(export_reg_checkpoint, tmp_path):
    out = tmp_path / "regressor.torchscript.pt"
    code, text = _export(export_reg_checkpoint, out)
    assert code == 0, text
    model = load_exported_model(out)
    assert model.format == "torchscript" and model.output_names == OUTPUTS
    assert json.loads(sidecar_path(out).read_text())["parity_check"]["passed"]
    outputs = model(*_raw_events(3))
    assert all(outputs[name].shape == (3,) and outputs[name].dtype == np.float32 for name in OUTPUTS)


def test_default_output_goes_to_the_run_directory(export_reg_checkpoint, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    checkpoint = shutil.copy(export_reg_checkpoint, run_dir / "checkpoints" / "best.pt")
    code, text = run_export(["--checkpoint", str(checkpoint), "--format", "torchscript", "--no-check"])
    assert code == 0, text
    assert (run_dir / "exported" / "regressor_best.torchscript.pt").is_file()
    assert (run_dir / "exported" / "regressor_best.torchscript.pt.json").is_file()


def test_parity_check_reads_the_events_of_input(export_reg_checkpoint, tmp_path):
    data = write_event_file(tmp_path / "data" / "events.npz", 6, seed=4)
    out = tmp_path / "regressor.torchscript.pt"
    code, text = _export(export_reg_checkpoint, out, "torchscript", "--input", str(data))
    assert code == 0, text
    assert "12 events (6 with injected dead channels)" in text and str(data) in text
    assert json.loads(sidecar_path(out).read_text())["parity_check"]["events"] == 12


def test_ema_weights_are_exported_by_default_and_raw_ones_on_request(export_reg_checkpoint, tmp_path):
    state = load_checkpoint(export_reg_checkpoint)
    shadow = {k: v + 0.01 if k.startswith("heads.") and v.is_floating_point() else v
              for k, v in state["model"].items()}
    with_ema = tmp_path / "with_ema.pt"
    save_checkpoint({**state, "ema": {"module": shadow}}, with_ema)
    outputs = {}
    for weights in ("default", "raw"):
        out = tmp_path / f"{weights}.torchscript.pt"
        weights_flag = ["--weights", weights] if weights == "raw" else []
        assert _export(with_ema, out, "torchscript", "--no-check", *weights_flag)[0] == 0
        model = load_exported_model(out)
        assert model.metadata["weights"] == ("ema" if weights == "default" else "raw")
        outputs[weights] = model(*_raw_events(2))["E"]
    assert not np.allclose(outputs["default"], outputs["raw"])


def test_a_failing_parity_check_exits_non_zero_and_writes_nothing(export_reg_checkpoint, tmp_path, monkeypatch):
    # a normalization in the graph that differs from the loader's (time off by 1 normalized unit)
    monkeypatch.setattr(lib.evaluation.inference_graph, "time_forward", lambda t, cfg: time_forward(t, cfg) + 1.0)
    out = tmp_path / "bad.torchscript.pt"
    code, text = _export(export_reg_checkpoint, out)
    assert code == 1
    assert "parity check failed" in text and "torch_graph" in text
    _assert_nothing_written(out)


def test_an_existing_export_is_only_replaced_with_force(export_reg_checkpoint, tmp_path):
    out = tmp_path / "regressor.torchscript.pt"
    assert _export(export_reg_checkpoint, out, "torchscript", "--no-check")[0] == 0
    before = out.read_bytes()
    code, text = _export(export_reg_checkpoint, out, "torchscript", "--no-check")
    assert code == 2 and "--force" in text and str(out) in text
    assert out.read_bytes() == before
    assert _export(export_reg_checkpoint, out, "torchscript", "--no-check", "--force")[0] == 0


def test_encoder_part_exports_tokens_from_an_mae_checkpoint_and_its_encoder_export(mae_run_dir, tmp_path):
    for source in (mae_run_dir / "checkpoints" / "last.pt", mae_run_dir / "encoder_last.pt"):
        out = tmp_path / f"{source.stem}.torchscript.pt"
        code, text = _export(source, out, "torchscript", "--part", "encoder")
        assert code == 0, text
        model = load_exported_model(out)
        assert model.metadata["part"] == "encoder" and model.output_names == ["tokens"]
        tokens = model(*_raw_events(2))["tokens"]
        assert tokens.shape[0] == 2 and list(tokens.shape[1:]) == model.metadata["outputs"][0]["shape"][1:]
        assert len(model.metadata["token_names"]) == tokens.shape[1]


@pytest.mark.slow
def test_encoder_part_exports_to_onnx(mae_run_dir, tmp_path):
    out = tmp_path / "encoder.onnx"
    code, text = _export(mae_run_dir / "encoder_last.pt", out, "onnx", "--part", "encoder")
    assert code == 0, text
    assert load_exported_model(out).output_names == ["tokens"]


# --------------------------------------------------------------------------------------- bad input
def test_mae_checkpoint_given_to_a_regressor_export_is_refused(mae_run_dir, tmp_path):
    out = tmp_path / "x.onnx"
    code, text = _export(mae_run_dir / "checkpoints" / "last.pt", out, "onnx")
    assert code == 2 and "not a regressor checkpoint" in text and "--part encoder" in text
    _assert_nothing_written(out)


def test_regressor_checkpoint_given_to_an_encoder_export_is_refused(export_reg_checkpoint, tmp_path):
    out = tmp_path / "x.onnx"
    code, text = _export(export_reg_checkpoint, out, "onnx", "--part", "encoder")
    assert code == 2 and "regressor checkpoint" in text and "--part regressor" in text
    _assert_nothing_written(out)


def test_truncated_checkpoint_is_refused(export_reg_checkpoint, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(export_reg_checkpoint.read_bytes()[: export_reg_checkpoint.stat().st_size // 2])
    out = tmp_path / "x.onnx"
    code, text = _export(truncated, out, "onnx")
    assert code == 2 and str(truncated) in text and "truncated" in text
    _assert_nothing_written(out)


def test_output_path_that_cannot_be_written_is_refused(export_reg_checkpoint, tmp_path):
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    code, text = _export(export_reg_checkpoint, not_a_directory / "x.onnx", "onnx")
    assert code == 2 and "writable directory" in text and str(not_a_directory) in text


def test_input_with_another_sensor_count_is_refused(export_reg_checkpoint, tmp_path):
    data = write_event_file(tmp_path / "data" / "small.npz", 4, seed=3, n_sensors=4000)
    out = tmp_path / "x.torchscript.pt"
    code, text = _export(export_reg_checkpoint, out, "torchscript", "--input", str(data))
    assert code == 2 and "4000" in text and "4760" in text and str(data) in text
    _assert_nothing_written(out)


def test_ema_weights_asked_of_a_run_without_ema_are_refused(export_reg_checkpoint, tmp_path):
    out = tmp_path / "x.torchscript.pt"
    code, text = _export(export_reg_checkpoint, out, "torchscript", "--weights", "ema")
    assert code == 2 and "no EMA weights" in text and "--weights raw" in text
    _assert_nothing_written(out)


def test_missing_onnxruntime_is_refused_naming_the_extra(export_reg_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    out = tmp_path / "x.onnx"
    code, text = _export(export_reg_checkpoint, out, "onnx")
    assert code == 2 and "onnxruntime is not installed" in text and EXPORT_EXTRA_HINT in text
    _assert_nothing_written(out)


def test_missing_onnxruntime_is_named_when_loading_an_export(onnx_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ExportError, match=r"onnxruntime is not installed.*pip install -e \.\[export\]"):
        load_exported_model(onnx_export.path)


def test_exported_model_refuses_inputs_of_another_sensor_count(onnx_export):
    model = load_exported_model(onnx_export.path)
    with pytest.raises(ExportError, match=r"npho must have shape \(events, 4760\), got \(2, 4000\)"):
        model(np.zeros((2, 4000), np.float32), np.zeros((2, 4000), np.float32))
