"""The worst-reconstructed events: found by residual size per task, read back raw from the evaluation loader,
and drawn."""
from __future__ import annotations

import numpy as np

from lib.config import RegressorConfig
from lib.config.schema import DataConfig
from lib.data.build import build_loader
from lib.data.stream import RAW_INPUTS
from lib.evaluation.worst_events import read_raw_events, worst_events
from lib.plots import plot_worst_events
from lib.tasks import build_tasks, parse_tasks
from tests.conftest import make_events, write_root


def _result(n: int = 200) -> dict:
    rng = np.random.default_rng(0)
    truth_e, uvw = rng.uniform(20, 60, n), rng.normal(0, 10, (n, 3))
    pred_e, pred_uvw = truth_e + rng.normal(0, 1, n), uvw + rng.normal(0, 1, (n, 3))
    pred_e[[17, 42]] += [30.0, -20.0]  # the two worst energies, in this order
    pred_uvw[99, 2] += 15.0  # the worst position
    truth_e[5] = np.nan  # no truth: never "worst"
    pred_e[5] = 1e6
    return {"run": np.full(n, 3), "event": np.arange(n) + 1000, "truth": {"energy": truth_e[:, None], "position": uvw},
            "pred": {"energy": pred_e[:, None], "position": pred_uvw}}


def test_the_k_largest_residuals_of_each_task_are_found_in_order():
    tasks = build_tasks(parse_tasks(["energy", "position"]))
    found = worst_events(tasks, _result(), 2)
    energy = [w for w in found if w.task == "energy"]
    assert [(w.rank, w.row, w.event) for w in energy] == [(1, 17, 1017), (2, 42, 1042)]
    assert energy[0].score > energy[1].score > 10 and energy[0].pred["E"] - energy[0].truth["E"] > 29
    assert [w.row for w in found if w.task == "position"][0] == 99
    assert worst_events(tasks, _result(), 0) == []


def test_raw_events_are_read_back_by_prediction_row_and_drawn(tmp_path):
    events = make_events(40)
    for k, rows in enumerate((slice(0, 25), slice(25, 40))):
        write_root(tmp_path / f"val_{k}.root", {name: values[rows] for name, values in events.items()})
    cfg = RegressorConfig(data=DataConfig(val_path=str(tmp_path), batch_size=16, num_workers=0))
    loader = build_loader(cfg, "val", 0, 1, extras=RAW_INPUTS)
    order = np.concatenate([batch["event"].numpy() for batch in loader])  # event id of each prediction row
    raw = read_raw_events(loader, {3, 31})
    assert set(raw) == {3, 31}
    for row in (3, 31):
        np.testing.assert_array_equal(raw[row]["npho"], events["npho"][order[row]])
        np.testing.assert_array_equal(raw[row]["time"], events["relative_time"][order[row]])

    tasks = build_tasks(parse_tasks(["energy"]))
    result = {"run": events["run"][order], "event": order, "truth": {"energy": events["energyTruth"][order, None]},
              "pred": {"energy": events["energyTruth"][order, None] + np.linspace(0, 1, 40)[:, None]}}
    worst = worst_events(tasks, result, 1)
    assert [w.row for w in worst] == [39]
    saved = plot_worst_events(worst, read_raw_events(loader, {39}), tmp_path / "plots")
    assert [p.name for p in saved] == ["energy_1.png"] and saved[0].stat().st_size > 10_000
