"""lib.evaluation.prediction_model: the checkpoint and the ONNX implementation of one call, raw arrays ->
outputs by name; `lib.predict --format onnx` on a small ONNX file exported here with torch.onnx.export."""
from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot
from torch import nn

from lib import predict
from lib.config import RegressorConfig, load_resolved
from lib.data.build import prediction_loader
from lib.engine import evaluation_weights
from lib.evaluation.inference import collect_predictions
from lib.evaluation.exported_model import EXPORT_KIND
from lib.evaluation.prediction_model import ExportedFileModel, PredictionModelError
from lib.geometry import N_SENSORS
from lib.recipes.finetune import build_regressor
from tests.conftest import make_events
from tests.fixtures_e2e import e2e_data, e2e_env, one_thread, reg_checkpoint  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("e2e_env")
OUTPUTS = ("E", "sigma_E", "u", "v", "w")


class TinyExport(nn.Module):
    """A stand-in for an exported regressor: raw npho / time -> E (with sigma), u, v, w."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(2, 4)

    def forward(self, npho: torch.Tensor, relative_time: torch.Tensor) -> tuple[torch.Tensor, ...]:
        npho_feature = torch.log1p(npho.clamp(0, 1e6)).mean(1)
        features = torch.stack([npho_feature, relative_time.clamp(-1e-6, 1e-6).mean(1) * 1e7], 1)
        out = self.linear(features)
        return out[:, 0], out[:, 0].exp(), out[:, 1], out[:, 2], out[:, 3]


def export_onnx(path: Path, metadata: dict[str, object] | None = None, outputs: tuple[str, ...] = OUTPUTS) -> Path:
    """TinyExport as ONNX (legacy exporter, dynamic batch) with `metadata` (default: the outputs) as metadata_props."""
    import onnx

    example = (torch.rand(2, 4760), torch.rand(2, 4760))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        batch = {"npho": {0: "batch"}, "relative_time": {0: "batch"}}
        torch.onnx.export(TinyExport(), example, str(path), input_names=["npho", "relative_time"],
                          output_names=list(outputs), dynamic_axes=batch, dynamo=False)
    model = onnx.load(str(path))
    inputs = [{"name": name, "shape": ["batch", N_SENSORS]} for name in ("npho", "relative_time")]
    props = ({"kind": EXPORT_KIND, "inputs": inputs, "outputs": [{"name": name} for name in outputs]}
             if metadata is None else metadata)
    onnx.helper.set_model_props(model, {key: json.dumps(value) for key, value in props.items()})
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory) -> Path:
    return export_onnx(tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_onnx_model_runs_on_raw_arrays_and_knows_its_tasks(onnx_file):
    model = ExportedFileModel(onnx_file)
    assert list(model.tasks) == ["energy", "position"]
    assert model.tasks["energy"].cfg.loss == "gaussian_nll" and model.tasks["position"].cfg.loss != "gaussian_nll"
    events = make_events(7)
    events["npho"][2, :5] = [1e10, np.nan, -3.0, 0.0, 1e10]  # dead channels as the files hold them
    outputs = model(events["npho"], events["relative_time"])
    with torch.no_grad():
        want = TinyExport()(torch.from_numpy(events["npho"]), torch.from_numpy(events["relative_time"]))
    for name, value in zip(OUTPUTS, want):
        np.testing.assert_allclose(outputs[name], value.numpy(), rtol=1e-5, err_msg=name)
    pred, sigma = model.by_task(outputs)
    assert pred["position"].shape == (7, 3) and list(sigma) == ["energy"]


def test_predict_with_format_onnx_writes_prediction_files(onnx_file, shard_dir, shard_events, tmp_path):
    out_dir = tmp_path / "pred"
    argv = ["--checkpoint", str(onnx_file), "--format", "onnx", "--input", str(shard_dir), "--out-dir", str(out_dir)]
    assert predict.main(argv) == 0
    with uproot.open(out_dir / "shard_1_pred.root") as file:
        tree = file["tree"].arrays(library="np")
        metadata = dict(zip(*(file["metadata"][key].array(library="np") for key in ("key", "value"))))
    rows = slice(40, 80)
    with torch.no_grad():
        want = TinyExport()(*(torch.from_numpy(shard_events[key][rows]) for key in ("npho", "relative_time")))
    np.testing.assert_allclose(tree["pred_E"], want[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(tree["sigma_E"], want[1].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(tree["truth_E"], shard_events["energyTruth"][rows])
    np.testing.assert_array_equal(tree["event"], shard_events["event"][rows])
    assert json.loads(metadata["model_format"]) == "onnx" and json.loads(metadata["tasks"]) == ["energy", "position"]


def test_checkpoint_model_predicts_what_the_training_evaluation_does(reg_checkpoint, shard_dir):
    model, cfg = predict.load_model(reg_checkpoint, "checkpoint", "cpu")
    result = predict.collect(model, prediction_loader(cfg, [str(shard_dir)], 16, extras=("npho_raw", "time_raw")))
    config, weights = evaluation_weights(reg_checkpoint)
    regressor = build_regressor(load_resolved(config, RegressorConfig))
    regressor.load_state_dict(weights)
    reference = collect_predictions(regressor, prediction_loader(cfg, [str(shard_dir)], 16), torch.device("cpu"))
    for task in ("energy", "position"):
        np.testing.assert_allclose(result["pred"][task], reference["pred"][task], rtol=1e-6, err_msg=task)
    np.testing.assert_array_equal(result["event"], reference["event"])


@pytest.mark.parametrize("case, fragment", [
    ("not an export", "not an xecmae export"),
    ("encoder outputs", "are not regression outputs"),
    ("not onnx", "is not a readable exported model"),
    ("no onnxruntime", "install the export extra: pip install -e .[export]"),
])
def test_unusable_onnx_models_are_refused_in_one_line(case, fragment, shard_dir, tmp_path, caplog, monkeypatch):
    path = tmp_path / "model.onnx"
    if case == "not an export":
        export_onnx(path, metadata={"kind": "something"})
    elif case == "encoder outputs":
        export_onnx(path, outputs=("tokens", "sigma_E", "u", "v", "w"))
    elif case == "not onnx":
        path.write_bytes(b"\x00not a model" * 10)
    else:
        export_onnx(path)
        monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    argv = ["--checkpoint", str(path), "--format", "onnx", "--input", str(shard_dir), "--out", str(tmp_path / "p.root")]
    with caplog.at_level(logging.ERROR, logger="lib.predict"):
        assert predict.main(argv) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fragment in record.getMessage() and "\n" not in record.getMessage()
    assert not (tmp_path / "p.root").exists()


def test_a_missing_model_file_is_refused(tmp_path, shard_dir, caplog):
    argv = ["--checkpoint", str(tmp_path / "nope.onnx"), "--format", "onnx", "--input", str(shard_dir),
            "--out", str(tmp_path / "p.root")]
    with caplog.at_level(logging.ERROR, logger="lib.predict"):
        assert predict.main(argv) == 2
    assert "nope.onnx does not exist" in caplog.text


def test_predict_runs_a_file_of_lib_export_as_it_runs_the_checkpoint(onnx_export, export_reg_checkpoint, shard_dir,
                                                                       tmp_path):
    # the exported graph (normalization and units inside) and the checkpoint give the same predictions
    assert onnx_export.exit_code == 0, onnx_export.log
    files = {}
    for fmt, model in (("onnx", onnx_export.path), ("checkpoint", export_reg_checkpoint)):
        out = tmp_path / f"{fmt}.root"
        assert predict.main(["--checkpoint", str(model), "--format", fmt, "--input", str(shard_dir),
                             "--out", str(out)]) == 0
        with uproot.open(out) as file:
            files[fmt] = file["tree"].arrays(library="np")
    np.testing.assert_array_equal(files["onnx"]["event"], files["checkpoint"]["event"])
    for output in ("E", "sigma_E", "u", "v", "w", "t", "theta", "phi"):
        want = files["checkpoint"][f"pred_{output}" if not output.startswith("sigma") else output]
        got = files["onnx"][f"pred_{output}" if not output.startswith("sigma") else output]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=output)
