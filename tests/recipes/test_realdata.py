"""End to end on files as the experiment writes them (the ROOT-written fixtures of tests/data/fixtures):
MAE pretraining and prediction run on real data, regression training on it is refused unless allowed,
the conventional reconstruction reaches the prediction files, and lib.predict's errors are one line."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import uproot

from lib import predict, train_mae, train_regressor
from tests.data.fixtures.make_fixtures import EVENTS, FOLDER, fixture_events
from tests.fixtures_e2e import (
    TRAIN_EVENTS, E2EData, e2e_data, e2e_env, mae_args, one_thread, read_history, refused_message, reg_args,
    reg_checkpoint, save_dir,  # noqa: F401 (fixtures)
)

pytestmark = pytest.mark.usefixtures("e2e_env")
REALDATA, MC = FOLDER / "realdata.root", FOLDER / "mc.root"
CHEAP = ("--epochs", "1", "--set", "data.val_path=null", "--set", "mlflow.enabled=false")
TINY_BATCH = ("--batch_size", "2", "--set", "data.in_memory=false")


def _on(data: E2EData, train: Path, val: Path | None = None) -> E2EData:
    return E2EData(train, val if val is not None else train, data.mlflow_template)


def _predict(checkpoint: Path, source: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    argv = ["--checkpoint", str(checkpoint), "--input", str(source), "--out", str(out), "--batch_size", "3", *extra]
    assert predict.main(argv) == 0
    with uproot.open(out) as file:
        return file["tree"].arrays(library="np")


# ------------------------------------------------------------------------------------------ MAE
def test_mae_pretrains_on_real_data_and_writes_its_reconstructions(e2e_data, save_dir):
    args = mae_args(_on(e2e_data, REALDATA), save_dir, "mae_real", *TINY_BATCH, "--epochs", "1",
                    "--set", "mlflow.enabled=false", "--set", f"training.num_val_predictions={EVENTS}")
    assert train_mae.main(args) == 0
    assert (save_dir / "mae_real" / "DONE").is_file()
    with uproot.open(save_dir / "mae_real" / "predictions" / "mae_predictions_val.root") as file:
        tree = file["tree"].arrays(library="np")
    written = fixture_events("realdata")
    np.testing.assert_array_equal(tree["event"], written["event"])
    np.testing.assert_array_equal(tree["input_npho"], written["npho"])
    np.testing.assert_array_equal(tree["energyReco"], written["energyReco"])
    assert "energyTruth" not in tree


def test_mae_runs_on_files_without_run_and_event(e2e_data, save_dir, tmp_path):
    # once a KeyError after a whole epoch, the run directory left without DONE
    events = {k: v for k, v in fixture_events("mc").items() if k in ("npho", "relative_time", "energyTruth")}
    path = tmp_path / "no_ids.root"
    with uproot.recreate(path) as file:
        file.mktree("tree", {k: (v.dtype, v.shape[1:]) for k, v in events.items()})
        file["tree"].extend(events)
    args = mae_args(_on(e2e_data, path), save_dir, "mae_ids", *TINY_BATCH, "--epochs", "1",
                    "--set", "mlflow.enabled=false", "--set", f"training.num_val_predictions={EVENTS}")
    assert train_mae.main(args) == 0 and (save_dir / "mae_ids" / "DONE").is_file()
    with uproot.open(save_dir / "mae_ids" / "predictions" / "mae_predictions_val.root") as file:
        assert file["tree"]["event"].array(library="np").tolist() == list(range(EVENTS))


# -------------------------------------------------------------------------------- regression training
def test_regression_training_on_real_data_is_refused_unless_allowed(e2e_data, save_dir, caplog):
    base = [*reg_args(_on(e2e_data, REALDATA), save_dir, "reg_real", "--tasks", "angle"), *TINY_BATCH, *CHEAP,
            "--set", "baseline.enabled=false"]
    message = refused_message(train_regressor.main, caplog, base)
    assert "no MC truth" in message and "real data" in message and "training.allow_real_data=true" in message
    assert not (save_dir / "reg_real").exists()
    assert train_regressor.main([*base, "--set", "training.allow_real_data=true"]) == 0


def test_fiducial_only_training_skips_the_events_outside(e2e_data, save_dir):
    with_cut = [*reg_args(e2e_data, save_dir, "fid"), *CHEAP, "--set", "training.fiducial_only=true"]
    assert train_regressor.main(with_cut) == 0
    uvw = np.concatenate([uproot.open(p)["tree"]["uvwTruth"].array(library="np")
                          for p in sorted(Path(e2e_data.train).glob("*.root"))])
    outside = ~((abs(uvw[:, 0]) <= 23.9) & (abs(uvw[:, 1]) <= 67.9) & (uvw[:, 2] >= 0) & (uvw[:, 2] <= 42))
    assert 0 < outside.sum() < TRAIN_EVENTS
    (record,) = read_history(save_dir / "fid")
    for task in ("energy", "position"):
        assert record[f"train/skipped_fraction_{task}"] == pytest.approx(outside.mean())


# ---------------------------------------------------------------------------------------- lib.predict
def test_predictions_on_real_data_carry_the_reconstruction_and_no_truth(reg_checkpoint, tmp_path):
    tree = _predict(reg_checkpoint, REALDATA, tmp_path / "real.root")
    written = fixture_events("realdata")
    assert len(tree["pred_E"]) == EVENTS and np.isfinite(tree["pred_E"]).all()
    assert np.isnan(tree["truth_E"]).all() and np.isnan(tree["truth_u"]).all()
    for name in ("energyReco", "timeReco", "uvwRecoFI", "xyzRecoFI", "emiAng", "xyzVTX"):
        np.testing.assert_array_equal(tree[name], written[name], err_msg=name)
    np.testing.assert_array_equal(tree["run"], written["run"])


def test_predictions_on_mc_compare_with_truth_and_reconstruction(reg_checkpoint, tmp_path):
    tree = _predict(reg_checkpoint, MC, tmp_path / "mc.root")
    written = fixture_events("mc")
    np.testing.assert_array_equal(tree["truth_E"], written["energyTruth"])  # the 1e10 fill as written
    np.testing.assert_array_equal(tree["energyReco"], written["energyReco"])
    assert "emiAng" not in tree  # truth in MC: it is not the reconstruction
    uvw = written["uvwTruth"]
    inside = (abs(uvw[:, 0]) <= 23.9) & (abs(uvw[:, 1]) <= 67.9) & (uvw[:, 2] >= 0) & (uvw[:, 2] <= 42)
    np.testing.assert_array_equal(tree["in_fiducial"], inside)


def test_predict_reads_rntuple_and_other_tree_names(reg_checkpoint, tmp_path):
    events = {k: v for k, v in fixture_events("mc").items() if v.ndim == 1 or k in ("npho", "relative_time",
                                                                                  "uvwRecoFI")}
    with uproot.recreate(tmp_path / "rntuple.root") as file:
        file["events"] = events
    out = tmp_path / "from_rntuple.root"
    tree = _predict(reg_checkpoint, tmp_path / "rntuple.root", out, "--tree", "events")
    np.testing.assert_array_equal(tree["energyReco"], events["energyReco"])


@pytest.mark.parametrize("extra, fragment", [
    (("--tree", "nope"), "no TTree or RNTuple 'nope' (found: tree (TTree)); set --tree"),
    (("--npho-branch", "relative_npho"), "read photon counts (e.g. --npho-branch npho)"),
    (("--time-branch", "nothing"), "branch 'nothing' not found"),
], ids=["tree", "degenerate npho", "branch"])
def test_predict_input_errors_are_one_line_naming_its_flags(reg_checkpoint, tmp_path, caplog, extra, fragment):
    argv = ["--checkpoint", str(reg_checkpoint), "--input", str(REALDATA), "--out", str(tmp_path / "p.root"), *extra]
    with caplog.at_level(logging.ERROR, logger="lib.predict"):
        assert predict.main(argv) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert fragment in record.getMessage() and "\n" not in record.getMessage() and record.exc_info is None
    assert not (tmp_path / "p.root").exists()
