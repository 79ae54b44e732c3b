"""`python -m lib.inpaint validate`: MC and real-data masks, the documented prediction file, metrics, bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import uproot

from lib import inpaint
from lib.data.dead_channels import read_dead_channels
from lib.evaluation.inpainting_files import read_inpainting_predictions
from lib.evaluation.inpainting_masks import MASK_ARTIFICIAL, MASK_DEAD, NOT_MASKED, evaluation_masks
from lib.geometry import N_SENSORS
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from tests.evaluation.inpainting_helpers import make_batch
from tests.fixtures_e2e import VAL_EVENTS, e2e_data  # noqa: F401 (fixture)

REALDATA = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "realdata.root"
LISTED = [10, 11, 500, 4300, 4650]


@pytest.fixture
def dead_file(tmp_path) -> Path:
    path = tmp_path / "dead.txt"
    path.write_text("# dead in every run\n" + "\n".join(map(str, LISTED)) + "\n")
    return path


def _batch_with_a_dead_sensor() -> dict:
    npho = np.full((3, N_SENSORS), 400.0)
    npho[:, 20] = 1e10  # flagged by the file: dead, no truth
    return make_batch(npho)


def test_mc_masks_hide_the_listed_sensors_with_truth_and_flag_the_files_dead_ones(dead_file):
    mask, kind = evaluation_masks(_batch_with_a_dead_sensor(), read_dead_channels(dead_file), real_data=False,
                                  artificial_fraction=0.0, seed=0)
    assert (kind[:, LISTED] == MASK_ARTIFICIAL).all() and (kind[:, 20] == MASK_DEAD).all()
    assert mask.sum() == 3 * (len(LISTED) + 1) and (kind[~mask] == NOT_MASKED).all()


def test_real_data_masks_list_as_dead_and_hide_a_reproducible_fraction_of_healthy_sensors(dead_file):
    batch = _batch_with_a_dead_sensor()
    _, kind = evaluation_masks(batch, read_dead_channels(dead_file), real_data=True, artificial_fraction=0.1, seed=3)
    assert (kind[:, LISTED] == MASK_DEAD).all() and (kind[:, 20] == MASK_DEAD).all()
    hidden = (kind == MASK_ARTIFICIAL).sum(1)
    assert ((hidden > 0.07 * N_SENSORS) & (hidden < 0.13 * N_SENSORS)).all()
    _, again = evaluation_masks(batch, read_dead_channels(dead_file), real_data=True, artificial_fraction=0.1, seed=3)
    np.testing.assert_array_equal(kind, again)  # seeded per (seed, run, event)
    _, other = evaluation_masks(batch, None, real_data=True, artificial_fraction=0.1, seed=4)
    assert (other != kind).any()


def test_validate_on_mc_writes_the_documented_file_and_metrics(e2e_data, dead_file, tmp_path):  # noqa: F811
    out = tmp_path / "out"
    assert inpaint.main(["validate", "--input", str(e2e_data.val), "--dead-channels", str(dead_file),
                         "--out", str(out), "--batch-size", "6"]) == 0
    with uproot.open(out / "inpainting_predictions.root") as file:
        tree = file["tree"]
        assert tree.num_entries == VAL_EVENTS
        assert {"run", "event", "n_masked", "sensor_id", "mask_type", "truth_npho", "truth_time", "pred_npho",
                "pred_time", "solid_angle_npho", "solid_angle_time"} <= set(tree.keys())
        assert "neighbour_npho" not in tree.keys()  # the evaluated filler is pred_*
        raw = uproot.open(next(e2e_data.val.glob("*.root")))["tree"].arrays(["event", "npho"], library="np")
    sensors, metadata = read_inpainting_predictions(out / "inpainting_predictions.root")
    assert metadata["filler"] == "neighbour" and metadata["baselines"] == ["neighbour", "solid_angle"]
    assert metadata["dead_channels"] == str(dead_file) and metadata["real_data"] is False
    hidden = sensors.mask_type == MASK_ARTIFICIAL
    np.testing.assert_array_equal(np.bincount(sensors.row[hidden]), np.full(VAL_EVENTS, len(LISTED)))
    np.testing.assert_array_equal(sensors.sensor[hidden], np.tile(LISTED, VAL_EVENTS))
    rows = np.searchsorted(raw["event"], sensors.event[sensors.row])
    np.testing.assert_array_equal(sensors.truth["npho"][hidden], raw["npho"][rows, sensors.sensor][hidden])
    dead = ~hidden  # the simulation's own unreadable sensors: filled, without truth
    assert (sensors.mask_type[dead] == MASK_DEAD).all() and np.isnan(sensors.truth["npho"][dead]).all()
    metrics = json.loads((out / "inpainting_metrics.json").read_text())
    neighbour = np.abs(sensors.preds["neighbour"]["npho"] - sensors.truth["npho"])[hidden].mean()
    assert metrics["npho"]["fillers"]["neighbour"]["all"]["mae"] == pytest.approx(neighbour)
    assert metrics["npho"]["sensors"] == VAL_EVENTS * len(LISTED)
    assert (out / "plots" / "inpainting_npho_vs_true_npho.png").is_file()


def test_validate_on_real_data_predicts_dead_sensors_without_truth(dead_file, tmp_path):
    out = tmp_path / "out"
    assert inpaint.main(["validate", "--input", str(REALDATA), "--dead-channels", str(dead_file), "--out", str(out),
                         "--artificial-fraction", "0.1"]) == 0
    sensors, metadata = read_inpainting_predictions(out / "inpainting_predictions.root")
    assert metadata["real_data"] is True and metadata["baselines"] == ["neighbour", "solid_angle"]  # xyzRecoFI
    dead = sensors.mask_type == MASK_DEAD
    assert np.isin(LISTED, sensors.sensor[dead]).all()
    assert np.isnan(sensors.truth["npho"][dead]).all() and np.isfinite(sensors.preds["neighbour"]["npho"][dead]).any()
    assert np.isfinite(sensors.truth["npho"][~dead]).all()
    assert (out / "plots" / "dead_sensor_npho.png").is_file()


def test_validate_never_overwrites_earlier_outputs(e2e_data, dead_file, tmp_path, caplog):  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "inpainting_metrics.json").write_text("earlier")
    args = ["validate", "--input", str(e2e_data.val), "--dead-channels", str(dead_file), "--out", str(out)]
    assert inpaint.main(args) == USAGE_ERROR_EXIT_CODE
    assert (out / "inpainting_metrics.json").read_text() == "earlier"
    assert "refusing to overwrite" in caplog.text


@pytest.mark.parametrize("lines, words", [("12\n4760\n", "sensor id 4760 is out of range"),
                                          ("12\nfourteen\n", "'fourteen' is not an integer")])
def test_a_bad_dead_channel_file_is_refused_in_one_line(e2e_data, tmp_path, caplog, lines, words):  # noqa: F811
    bad = tmp_path / "dead.txt"
    bad.write_text(lines)
    code = inpaint.main(["validate", "--input", str(e2e_data.val), "--dead-channels", str(bad),
                         "--out", str(tmp_path / "out")])
    assert code == USAGE_ERROR_EXIT_CODE
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert words in error and f"{bad}:2" in error and "\n" not in error
    assert not (tmp_path / "out").exists()


def test_a_missing_position_branch_is_refused_in_one_line(e2e_data, dead_file, tmp_path, caplog):  # noqa: F811
    code = inpaint.main(["validate", "--input", str(e2e_data.val), "--dead-channels", str(dead_file),
                         "--out", str(tmp_path / "out"), "--position-branch", "xyzRecoFI"])
    assert code == USAGE_ERROR_EXIT_CODE
    (error,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "'xyzRecoFI'" in error and "--position-branch" in error and "\n" not in error


def test_validate_with_an_inpainter_compares_it_with_the_baselines(e2e_data, dead_file, tmp_path,  # noqa: F811
                                                                   export_inp_checkpoint):
    out = tmp_path / "out"
    assert inpaint.main(["validate", "--input", str(e2e_data.val), "--dead-channels", str(dead_file), "--out", str(out),
                         "--checkpoint", str(export_inp_checkpoint), "--max-events", "10"]) == 0
    sensors, metadata = read_inpainting_predictions(out / "inpainting_predictions.root")
    assert metadata["filler"] == "inpainter" and metadata["baselines"] == ["neighbour", "solid_angle"]
    assert len(sensors.run) == 10
    hidden = sensors.mask_type == MASK_ARTIFICIAL
    assert np.isfinite(sensors.preds["inpainter"]["npho"][hidden]).all()
    assert (sensors.preds["inpainter"]["npho"][hidden] != sensors.preds["neighbour"]["npho"][hidden]).any()
    npho = json.loads((out / "inpainting_metrics.json").read_text())["npho"]
    ratio = npho["fillers"]["inpainter"]["all"]["mae"] / npho["fillers"]["neighbour"]["all"]["mae"]
    assert npho["ratio"]["inpainter/neighbour"]["all"]["mae"] == pytest.approx(ratio)
    time = json.loads((out / "inpainting_metrics.json").read_text())["time"]
    assert set(time["fillers"]) == {"inpainter", "neighbour", "solid_angle"} and time["unit"] == "ns"
