"""lib.predict over many files: one prediction file and one record per input (--out-dir), skipping what
is complete, failures recorded per input, the manifest and the summary of lib.evaluation.prediction_jobs."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import uproot

from lib import predict
from lib.evaluation.prediction_jobs import main as merge_main
from lib.io.prediction_records import read_record, write_json
from tests.data.fixtures.make_fixtures import FOLDER, fixture_events
from tests.fixtures_e2e import e2e_data, e2e_env, one_thread, reg_checkpoint  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("e2e_env")
REALDATA = FOLDER / "realdata.root"


def _tree(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as file:
        return file["tree"].arrays(library="np")


def _run(checkpoint: Path, inputs: list, out_dir: Path, *extra: str) -> int:
    return predict.main(["--checkpoint", str(checkpoint), "--input", *map(str, inputs), "--out-dir", str(out_dir),
                         "--batch_size", "16", *extra])


def _stamps(out_dir: Path) -> dict[str, int]:
    return {path.name: path.stat().st_mtime_ns for path in out_dir.glob("*_pred.root")}


def test_each_input_gets_its_own_file_with_its_events_in_order(reg_checkpoint, shard_dir, tmp_path):
    out_dir = tmp_path / "pred"
    assert _run(reg_checkpoint, [shard_dir, REALDATA], out_dir) == 0
    combined = tmp_path / "all.root"
    assert predict.main(["--checkpoint", str(reg_checkpoint), "--input", str(shard_dir), "--out", str(combined)]) == 0
    together = _tree(combined)
    for k in range(3):
        tree = _tree(out_dir / f"shard_{k}_pred.root")
        np.testing.assert_array_equal(tree["event"], np.arange(40 * k, 40 * (k + 1)))
        rows = slice(40 * k, 40 * (k + 1))  # the combined file, also in file order
        np.testing.assert_allclose(tree["pred_E"], together["pred_E"][rows], rtol=1e-6)
        np.testing.assert_array_equal(tree["truth_u"], together["truth_u"][rows])
        assert read_record(out_dir, f"shard_{k}_pred.root").events == 40
    real = _tree(out_dir / "realdata_pred.root")
    written = fixture_events("realdata")
    np.testing.assert_array_equal(real["energyReco"], written["energyReco"])  # reconstruction passed through
    np.testing.assert_array_equal(real["event"], written["event"])
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (summary["files"], summary["done"], summary["skipped"], summary["failures"]) == (4, 4, 0, [])
    assert summary["events"] == 120 + len(written["event"])
    assert {"E_rel_w68_pct", "u_w68"} <= set(summary["resolutions"]["all"])  # over the files with truth
    manifest = json.loads((out_dir / "manifest.json").read_text())
    assert [entry["status"] for entry in manifest["inputs"]] == ["done"] * 4


def test_a_second_run_predicts_only_what_is_missing(reg_checkpoint, shard_dir, tmp_path):
    out_dir = tmp_path / "pred"
    assert _run(reg_checkpoint, [shard_dir], out_dir) == 0
    before = _stamps(out_dir)
    (out_dir / "shard_1_pred.root").unlink()
    assert _run(reg_checkpoint, [shard_dir], out_dir) == 0
    after = _stamps(out_dir)
    assert after["shard_0_pred.root"] == before["shard_0_pred.root"]
    assert after["shard_2_pred.root"] == before["shard_2_pred.root"]
    assert "shard_1_pred.root" in after
    summary = json.loads((out_dir / "summary.json").read_text())
    assert (summary["done"], summary["skipped"], summary["events"]) == (1, 2, 120)


def test_an_input_that_is_gone_is_recorded_and_the_others_are_predicted(reg_checkpoint, shard_dir, tmp_path, caplog):
    out_dir = tmp_path / "pred"
    gone = tmp_path / "deleted_since.root"
    files = [shard_dir / "shard_0.root", gone, shard_dir / "shard_2.root"]
    with caplog.at_level(logging.ERROR):
        assert _run(reg_checkpoint, files, out_dir) == 1
    assert sorted(_stamps(out_dir)) == ["shard_0_pred.root", "shard_2_pred.root"]
    record = read_record(out_dir, "deleted_since_pred.root")
    assert record.status == "failed" and "deleted_since.root: does not exist" in record.error
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["failures"] == [{"input": str(gone), "status": "failed", "error": record.error}]
    assert summary["events"] == 80
    (message,) = [r.getMessage() for r in caplog.records if "input files failed" in r.getMessage()]
    assert message.startswith("1 of 3 input files failed: ") and str(gone) in message and "\n" not in message


def test_the_array_task_mode_writes_records_only_and_the_merge_step_reports(reg_checkpoint, shard_dir, tmp_path):
    out_dir = tmp_path / "pred"
    gone = tmp_path / "gone.root"
    assert _run(reg_checkpoint, [shard_dir / "shard_0.root", gone], out_dir, "--no-summary") == 0
    assert not (out_dir / "summary.json").exists()
    inputs = [{"input": str(shard_dir / "shard_0.root"), "output": "shard_0_pred.root", "task": 0},
              {"input": str(gone), "output": "gone_pred.root", "task": 0},
              {"input": str(shard_dir / "shard_1.root"), "output": "shard_1_pred.root", "task": 1}]
    write_json(out_dir / "plan.json", {"model": {"path": str(reg_checkpoint)}, "inputs": inputs})
    assert merge_main(["merge", str(out_dir)]) == 1
    statuses = [e["status"] for e in json.loads((out_dir / "manifest.json").read_text())["inputs"]]
    assert statuses == ["done", "failed", "missing"]


def test_predictions_of_another_model_are_kept_unless_forced(reg_checkpoint, shard_dir, tmp_path, caplog):
    out_dir = tmp_path / "pred"
    assert _run(reg_checkpoint, [shard_dir / "shard_0.root"], out_dir) == 0
    record_file = out_dir / "records" / "shard_0_pred.root.json"
    record = json.loads(record_file.read_text())
    record_file.write_text(json.dumps({**record, "model_sha256": "0" * 64}))
    before = _stamps(out_dir)
    with caplog.at_level(logging.ERROR, logger="lib.predict"):
        assert _run(reg_checkpoint, [shard_dir / "shard_0.root"], out_dir) == 2
    assert "holds predictions of another model for 1 input(s)" in caplog.text and "--force" in caplog.text
    assert _stamps(out_dir) == before
    assert _run(reg_checkpoint, [shard_dir / "shard_0.root"], out_dir, "--force") == 0
    assert _stamps(out_dir) != before
