"""Inpainting as preprocessing: `lib.predict --inpaint` and `lib.inpaint study` with a real (tiny) regressor."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lib import inpaint, predict
from lib.evaluation.inpainting_baselines import NeighbourFiller
from lib.evaluation.prediction_files import read_predictions
from lib.io.exit_codes import USAGE_ERROR_EXIT_CODE
from tests.evaluation.inpainting_helpers import make_batch
from tests.fixtures_e2e import e2e_data, e2e_env, one_thread, reg_checkpoint, write_npz_shard  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("e2e_env")
DEAD = [10, 11, 500, 1800, 4300, 4650]
FILL = np.float32(1e10)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """npz files of the same 12 events: clean, with DEAD at the fill value, and filled by hand with the neighbour
    mean of the dead file's other sensors (the time of a filled sensor without one: the fill value): DEAD only
    (by_hand) or every sensor without a valid npho (by_hand_all: DEAD and the simulation's own)."""
    root = tmp_path_factory.mktemp("inpaint_shards")
    clean = write_npz_shard(root / "clean" / "shard.npz", 12, seed=5)
    events = dict(np.load(clean))
    dead = {**events, "npho": events["npho"].copy(), "relative_time": events["relative_time"].copy()}
    dead["npho"][:, DEAD] = FILL
    dead["relative_time"][:, DEAD] = FILL
    batch = make_batch(dead["npho"], dead["relative_time"])
    listed = np.zeros_like(batch["npho_valid"].numpy())
    listed[:, DEAD] = True
    paths, files = {"clean": clean}, {"dead": dead}
    for name, mask in {"by_hand": listed, "by_hand_all": ~batch["npho_valid"].numpy()}.items():
        fill = NeighbourFiller().fill(batch, mask)
        files[name] = {**dead, "npho": dead["npho"].copy(), "relative_time": dead["relative_time"].copy()}
        files[name]["npho"][mask] = fill["npho"][mask]
        files[name]["relative_time"][mask] = np.where(np.isfinite(fill["time"]), fill["time"], FILL)[mask]
    for name, arrays in files.items():
        (root / name).mkdir()
        np.savez(root / name / "shard.npz", **arrays)
        paths[name] = root / name / "shard.npz"
    return paths


def _predict(checkpoint: Path, data: Path, out: Path, *extra: str) -> dict[str, np.ndarray]:
    assert predict.main(["--checkpoint", str(checkpoint), "--input", str(data), "--out", str(out), *extra]) == 0
    return read_predictions(out)[0]


def test_predict_inpaint_fills_the_dead_sensors_before_the_regressor(reg_checkpoint, shards, tmp_path):
    inpainted = _predict(reg_checkpoint, shards["dead"], tmp_path / "inpainted.root", "--inpaint", "neighbour")
    by_hand = _predict(reg_checkpoint, shards["by_hand_all"], tmp_path / "by_hand.root")
    sentinel = _predict(reg_checkpoint, shards["dead"], tmp_path / "sentinel.root")
    for key in ("pred_E", "pred_u", "pred_v", "pred_w"):
        np.testing.assert_allclose(inpainted[key], by_hand[key], rtol=1e-6, err_msg=key)
    assert not np.allclose(inpainted["pred_E"], sentinel["pred_E"], rtol=1e-6)


def test_predict_inpaint_with_neither_a_baseline_nor_a_checkpoint_is_refused(reg_checkpoint, shards, tmp_path, caplog):
    code = predict.main(["--checkpoint", str(reg_checkpoint), "--input", str(shards["dead"]),
                         "--out", str(tmp_path / "p.root"), "--inpaint", "nearest"])
    assert code == USAGE_ERROR_EXIT_CODE
    assert "nearest: neither a baseline (neighbour, solid_angle) nor an existing inpainter checkpoint" in caplog.text


def test_study_compares_the_regressor_on_the_same_events_per_scenario(reg_checkpoint, shards, tmp_path):
    dead_file = tmp_path / "dead.txt"
    dead_file.write_text("\n".join(map(str, DEAD)) + "\n")
    out = tmp_path / "study"
    assert inpaint.main(["study", "--regressor", str(reg_checkpoint), "--input", str(shards["clean"]),
                         "--dead-channels", str(dead_file), "--out", str(out), "--batch-size", "5"]) == 0
    results = json.loads((out / "dead_channel_study.json").read_text())
    scenarios = results["scenarios"]
    assert list(scenarios) == ["no_dead", "dead_sentinel", "dead_neighbour", "dead_solid_angle"]
    assert results["events"] == 12 and results["dead_sensors_per_event"] == len(DEAD)
    expected = {"no_dead": "clean", "dead_sentinel": "dead", "dead_neighbour": "by_hand"}
    for scenario, shard in expected.items():  # each scenario is the regressor on that input, event by event
        plain = _predict(reg_checkpoint, shards[shard], tmp_path / f"{shard}.root")
        assert scenarios[scenario]["E_bias"] == pytest.approx(np.mean(plain["pred_E"] - plain["truth_E"]), rel=1e-4)
        assert scenarios[scenario]["u_bias"] == pytest.approx(np.mean(plain["pred_u"] - plain["truth_u"]), rel=1e-4)
    table = (out / "dead_channel_study.md").read_text()
    assert "(i) no dead channels" in table and "(ii) dead channels as sentinels" in table
    assert "(iv) dead channels filled: neighbour baseline" in table
    assert (out / "plots" / "dead_channel_study.png").is_file()


def test_an_inpainter_fills_for_predict_and_joins_the_study(reg_checkpoint, export_inp_checkpoint, shards, tmp_path):
    inpainted = _predict(reg_checkpoint, shards["dead"], tmp_path / "inp.root", "--inpaint", str(export_inp_checkpoint))
    sentinel = _predict(reg_checkpoint, shards["dead"], tmp_path / "sentinel.root")
    assert np.isfinite(inpainted["pred_E"]).all() and not np.allclose(inpainted["pred_E"], sentinel["pred_E"])
    dead_file = tmp_path / "dead.txt"
    dead_file.write_text("\n".join(map(str, DEAD)) + "\n")
    out = tmp_path / "study"
    assert inpaint.main(["study", "--regressor", str(reg_checkpoint), "--input", str(shards["clean"]),
                         "--dead-channels", str(dead_file), "--out", str(out), "--inpainter",
                         str(export_inp_checkpoint), "--baselines", "neighbour"]) == 0
    scenarios = json.loads((out / "dead_channel_study.json").read_text())["scenarios"]
    assert list(scenarios) == ["no_dead", "dead_sentinel", "dead_inpainter", "dead_neighbour"]
    assert "(iii) dead channels inpainted" in (out / "dead_channel_study.md").read_text()
