"""Analysis macros (macros/*.py): run as scripts on synthetic files; clear errors for missing inputs."""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lib.normalization import NormalizationConfig, normalize
from lib.evaluation.prediction_files import write_mae_predictions, write_regression_predictions
from tests.conftest import make_events, write_npz

REPO = Path(__file__).resolve().parents[2]
MACROS = REPO / "macros"


def run_macro(name: str, *args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MACROS / name), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def load_macro(name: str):
    spec = importlib.util.spec_from_file_location(f"macro_{Path(name).stem}", MACROS / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resolution_prints_the_metrics_table_and_writes_plots(tmp_path):
    rng = np.random.default_rng(0)
    n = 200
    truth = {"E": rng.uniform(0.02, 0.06, n), "w": rng.uniform(0.0, 20.0, n)}
    pred = {"E": truth["E"] * (1 + rng.normal(0, 0.02, n)), "w": truth["w"] + rng.normal(0.3, 1.0, n)}
    path = write_regression_predictions(
        tmp_path / "pred.root", run=np.zeros(n), event=np.arange(n), truth=truth, pred=pred, sigma=None,
        metadata={"tasks": ["energy", "position"], "normalization": {}, "checkpoint": "c.pt", "split": "val"})

    result = run_macro("resolution.py", "--predictions", path, "--out", tmp_path / "plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for output in truth:
        residuals = pred[output] - truth[output]
        low, high = np.percentile(residuals, [15.865, 84.135])
        row = next(line.split() for line in result.stdout.splitlines() if line.split()[:1] == [output])
        assert float(row[3]) == pytest.approx(residuals.mean(), rel=1e-3)  # bias
        assert float(row[4]) == pytest.approx(np.sqrt(np.mean(residuals**2)), rel=1e-3)  # rms
        assert float(row[5]) == pytest.approx((high - low) / 2, rel=1e-3)  # w68
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6


def test_plot_history_from_json(tmp_path):
    history = [{"epoch": e, "lr": 1e-3 / e, "train/total_loss": 1.0 / e, "val/total_loss": 1.2 / e} for e in (1, 2, 3)]
    (tmp_path / "training_history.json").write_text(json.dumps(history))
    result = run_macro("plot_history.py", "--history", tmp_path / "training_history.json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["curve_total_loss.png", "lr.png"]


def test_event_display_with_mae_predictions(tmp_path):
    events = make_events(2, first_event=40)
    shard = write_npz(tmp_path / "shard.npz", events)
    cfg = NormalizationConfig()
    x, npho_valid, time_valid = normalize(events["npho"], events["relative_time"], cfg)
    rng = np.random.default_rng(1)
    order = [1, 0]  # the prediction file lists the events in another order: matched on (run, event)
    write_mae_predictions(
        tmp_path / "mae.root", run=events["run"][order], event=events["event"][order], npho=events["npho"][order],
        time=events["relative_time"][order], npho_valid=npho_valid[order], time_valid=time_valid[order],
        mask=rng.random((2, x.shape[1])) < 0.3, pred=x[order][..., :1] + 0.1, truth={}, norm=cfg,
        metadata={"predict_channels": ["npho"], "checkpoint": "m.pt", "split": "val"})

    result = run_macro("event_display.py", "--input", shard, "--event", 1, "--mae-predictions", "mae.root",
                       "--out", "display.png", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "display.png").read_bytes().startswith(b"\x89PNG")


def test_compare_runs_table(tmp_path):
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "metrics.json").write_text(
        json.dumps({"regressor": {"E_w68": 0.00123}, "baseline": {"E_w68": 0.005},
                    "energy_resolution": {"all": {"regressor": {"fit": {"b": 0.0066}, "points": [[0.02, 0.01]]}}},
                    "note": "text"}))
    (tmp_path / "scratch").mkdir()
    (tmp_path / "scratch" / "training_history.json").write_text(
        json.dumps([{"epoch": 1, "val/E_w68": 0.01}, {"epoch": 2, "val/E_w68": 0.00456}]))

    result = run_macro("compare_runs.py", "pretrained", "scratch", "--markdown", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("|")[1:4] == [" metric ", " pretrained ", " scratch "]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:4]] for line in lines[2:]}
    assert rows["regressor/E_w68"] == ["0.00123", "-"]
    assert rows["baseline/E_w68"] == ["0.005", "-"]
    assert rows["val/E_w68"] == ["-", "0.00456"]
    assert rows["energy_resolution/all/regressor/fit/b"] == ["0.0066", "-"]
    assert not [name for name in rows if "points" in name or name == "note"], rows  # one number per row


def test_missing_file_exits_nonzero_with_a_message_and_no_traceback(tmp_path):
    result = run_macro("resolution.py", "--predictions", "absent.root", cwd=tmp_path)
    assert result.returncode != 0
    assert "absent.root does not exist" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("macro, args, named", [
    ("plot_history.py", ["--history", "absent.json"], "absent.json"),
    ("event_display.py", ["--input", "absent.npz", "--event", "0"], "absent.npz"),
    ("compare_runs.py", ["absent_run"], "absent_run"),
])
def test_other_macros_report_missing_inputs(tmp_path, monkeypatch, caplog, macro, args, named):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR):
        assert load_macro(macro).main(args) == 1
    assert named in caplog.text
