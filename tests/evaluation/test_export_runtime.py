"""The exported ONNX file is usable without torch: onnxruntime in a fresh process that never imports torch
reproduces what `python -m lib.predict` writes for the same data file."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from lib import predict
from lib.evaluation.export_check import RELATIVE_TOLERANCE
from tests.evaluation.export_helpers import write_event_file
from tests.fixtures_e2e import REPO

TORCH_FREE_PREDICTION = """
import json, sys
import numpy as np, uproot
from lib.evaluation.exported_model import load_exported_model

model_path, data_path, predictions_path = sys.argv[1:4]
model = load_exported_model(model_path)
with np.load(data_path) as data:
    outputs = model(data["npho"], data["relative_time"])
    run, event = data["run"], data["event"]
with uproot.open(predictions_path) as file:
    written = file["tree"].arrays(library="np")
assert (written["run"] == run).all() and (written["event"] == event).all(), "events differ"
relative = {}
for name, value in outputs.items():
    want = written[name if name.startswith("sigma_") else "pred_" + name]
    relative[name] = float(np.max(np.abs(value - want)) / np.sqrt(np.mean(want.astype(np.float64) ** 2)))
assert "torch" not in sys.modules, "torch was imported"
print(json.dumps(relative))
"""


def test_onnxruntime_without_torch_reproduces_lib_predict(onnx_export, export_reg_checkpoint, tmp_path):
    data = write_event_file(tmp_path / "data" / "events.npz", 12, seed=7)
    written = tmp_path / "predictions.root"
    assert predict.main(["--checkpoint", str(export_reg_checkpoint), "--input", str(data), "--out", str(written),
                         "--batch_size", "5", "--device", "cpu"]) == 0
    result = subprocess.run([sys.executable, "-c", TORCH_FREE_PREDICTION, str(onnx_export.path), str(data),
                             str(written)], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    relative = json.loads(result.stdout)
    assert set(relative) == {"E", "sigma_E", "t", "u", "v", "w", "theta", "phi"}
    assert all(value <= RELATIVE_TOLERANCE for value in relative.values()), relative
