"""`python -m lib.study summary` on a real 3-run sweep of a toy model (sqlite MLflow and run directories)."""
from __future__ import annotations

import csv
import json

import pytest
import torch

from lib.engine import Trainer, prepare_run_dir
from lib.engine.distributed import DistInfo
from lib.study.__main__ import main
from tests.engine.ddp_worker import ToyLoader, ToyModel, ToyTask, toy_config, toy_data

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
LRS = (0.001, 0.01, 0.1)


@pytest.fixture(scope="module")
def sweep_runs(tmp_path_factory):
    """Runs scan_lr<lr> (tagged sweep=scan) and one run of another sweep, in <tmp>/runs, MLflow in sqlite."""
    runs = tmp_path_factory.mktemp("summary") / "runs"
    uri = f"sqlite:///{runs.parent / 'mlflow.db'}"
    for name, lr, sweep in [*((f"scan_lr{lr}", lr, "scan") for lr in LRS), ("other_lr0.01", 0.01, "other")]:
        cfg = toy_config(runs, run_name=name, training={"epochs": 3, "lr": lr, "seed": 1},
                         mlflow={"enabled": True, "tracking_uri": uri, "experiment": "summ",
                                 "tags": {"sweep": sweep}})
        torch.manual_seed(0)
        x, y = toy_data(16)
        vx, vy = toy_data(8, seed=3)
        Trainer(cfg, ToyModel(), ToyTask(), ToyLoader(x, y, 4), ToyLoader(vx, vy, 4, shuffle=False),
                prepare_run_dir(cfg, CPU, False), CPU).fit()
    return {"runs": runs, "uri": uri}


def _rows(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def _final_val_losses(runs) -> dict[str, float]:
    return {f"scan_lr{lr}": json.loads((runs / f"scan_lr{lr}" / "training_history.json").read_text())[-1]["val/loss"]
            for lr in LRS}


@pytest.mark.parametrize("source", ["mlflow", "run_dirs"])
def test_summary_ranks_a_sweep_and_shows_only_what_differs(sweep_runs, tmp_path, source, capsys):
    where = (["--experiment", "summ", "--tracking-uri", sweep_runs["uri"]] if source == "mlflow"
             else [str(sweep_runs["runs"])])
    out = tmp_path / "out"
    assert main(["summary", *where, "--sweep", "scan", "--top", "2", "--out", str(out)]) == 0, capsys.readouterr().err
    rows = _rows(out / "summary.csv")
    expected = _final_val_losses(sweep_runs["runs"])
    assert [row["run"] for row in rows] == sorted(expected, key=expected.get)  # best val/loss first
    assert [row["rank"] for row in rows] == ["1", "2", "3"]
    differing = [column for column in rows[0] if "." in column and not column.startswith("final ")]
    assert differing == ["training.lr"]  # run_name, the sweep tag and every shared key hidden
    for row in rows:
        assert float(row["final val/loss"]) == pytest.approx(expected[row["run"]], rel=1e-5)
        assert float(row["overfit gap"]) == pytest.approx(float(row["val/loss"]) - float(row["train/loss"]))
        assert float(row["best val/loss"]) <= float(row["final val/loss"]) + 1e-9
        assert row["steps"] == "12"  # 3 epochs of 4 batches
    table = (out / "summary.md").read_text()
    assert table.index(rows[0]["run"]) < table.index(rows[2]["run"]) and "other_lr0.01" not in table
    assert (out / "summary.png").stat().st_size > 10_000


def test_summary_ranks_by_a_chosen_metric_either_way(sweep_runs, tmp_path):
    out = tmp_path / "out"
    assert main(["summary", str(sweep_runs["runs"]), "--metric", "val/loss", "--maximize", "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    assert len(rows) == 4 and "mlflow.tags.sweep" not in rows[0]
    values = [float(row["final val/loss"]) for row in rows]
    assert values == sorted(values, reverse=True)


@pytest.mark.parametrize("argv, message", [
    (["--metric", "val/nothing"], "choose --metric among"),
    (["--sweep", "nope"], "no run directories of sweep 'nope'"),
    (["--top", "0"], "--top 0"),
])
def test_bad_summary_input_exits_2_with_one_line(sweep_runs, tmp_path, capsys, argv, message):
    assert main(["summary", str(sweep_runs["runs"]), *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_an_unknown_experiment_names_the_ones_there(sweep_runs, tmp_path, capsys):
    assert main(["summary", "--experiment", "nope", "--tracking-uri", sweep_runs["uri"]]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment 'nope'" in err and "it has: " in err and "summ" in err.split("it has: ")[1]


def test_a_final_evaluation_metric_ranks_and_is_its_own_best(sweep_runs, tmp_path):
    import shutil

    runs = tmp_path / "runs"
    for lr, width in zip(LRS, (3.0, 2.0, 4.0)):  # metrics.json as a finished fine-tune writes it
        run = shutil.copytree(sweep_runs["runs"] / f"scan_lr{lr}", runs / f"scan_lr{lr}")
        (run / "metrics.json").write_text(json.dumps({"regressor": {"E_rel_w68_pct": width}}))
    assert main(["summary", str(runs), "--metric", "final/E_rel_w68_pct", "--out", str(tmp_path / "out")]) == 0
    rows = _rows(tmp_path / "out" / "summary.csv")
    assert [row["run"] for row in rows] == ["scan_lr0.01", "scan_lr0.001", "scan_lr0.1"]
    assert [row["best final/E_rel_w68_pct"] for row in rows] == ["2.0", "3.0", "4.0"]
    assert rows[0]["best at step"] == "12"
