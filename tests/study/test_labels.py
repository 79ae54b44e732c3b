"""`python -m lib.study labels` through the job suite's local executor with the stand-in trainer."""
from __future__ import annotations

import csv
import re
import subprocess
import sys

import pytest
import yaml

from lib.study.__main__ import main
from tests.study.conftest import REPO

STANDIN = "tests.slurm.standin_trainer"


def _labels(workspace, *extra: str, env: dict[str, str] | None = None) -> int:
    argv = ["labels", "--config", workspace["reg"], "--mae", workspace["encoder"], "--entry", STANDIN, *extra]
    return main(argv, {"EXECUTOR": "local", "CPU_PROCS": "1", **(env or {})})


def _rows(path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_study_trains_every_point_then_writes_table_plot_and_mlflow_parent(study_workspace):
    runs = study_workspace["runs"]
    assert _labels(study_workspace, "--name", "st", "--events", "8,32", "--seeds", "2", "--steps", "6") == 0
    names = sorted(path.name for path in runs.iterdir() if path.name.startswith("st_"))
    assert len(names) == 3 * 2 * 2 and "st_sweep" not in names  # the array's logs folder exists on SLURM only
    config = yaml.safe_load((runs / "st_frozen_n8_s1" / "config.yaml").read_text())
    assert config["training"]["epochs"] * config["data"]["steps_per_epoch"] == 6
    assert config["mlflow"]["tags"] == {"sweep": "st", "study": "st", "study_mode": "frozen", "study_events": "8",
                                        "study_seed": "1"}
    table = {(row["mode"], row["events"]): row for row in _rows(runs / "st" / "labels.csv")}
    assert sorted(table) == sorted((mode, n) for mode in ("pretrained", "frozen", "scratch", "classical")
                                   for n in ("8", "32"))
    # the stand-in's width: 100 / sqrt(N), x 0.8 pretrained, + 0.1 x (seed mod 10) with seeds 42 and 43
    assert float(table[("scratch", "32")]["E_rel_w68_pct_mean"]) == pytest.approx(100 / 32 ** 0.5 + 0.25)
    assert float(table[("frozen", "8")]["E_rel_w68_pct_std"]) == pytest.approx(0.1 / 2 ** 0.5)
    assert table[("classical", "8")]["seeds"] == "1"  # the same baseline in all 6 points, counted once
    assert len(_rows(runs / "st" / "points.csv")) == 12
    report = (runs / "st" / "labels.md").read_text()
    assert "| N labelled | pretrained | frozen | scratch | classical | gain pretrained vs scratch |" in report
    assert "+19.7 %" in report  # 0.2 s / (s + 0.25) at N = 32, s = 100 / sqrt(32): the gain, in % of scratch
    assert (runs / "st" / "labels.png").stat().st_size > 10_000
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{runs}/mlflow.db")
    experiment = client.get_experiment_by_name("study_test")
    parent, = client.search_runs([experiment.experiment_id], "tags.study_role = 'parent'")
    assert parent.info.run_name == "st" and parent.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(parent.info.run_id, "scratch/E_rel_w68_pct")] == [8, 32]
    assert {item.path for item in client.list_artifacts(parent.info.run_id)} >= {"labels.csv", "labels.md",
                                                                                 "labels.png", "points.csv"}


def test_rerun_skips_finished_points_and_continues_unfinished_ones(study_workspace, capsys):
    runs = study_workspace["runs"]
    args = ["--name", "again", "--events", "8,16", "--seeds", "1", "--steps", "4", "--modes", "scratch"]
    assert _labels(study_workspace, *args) == 0
    (runs / "again_scratch_n16_s0" / "DONE").unlink()  # as if its job had been stopped before the end
    capsys.readouterr()
    assert _labels(study_workspace, *args) == 0
    out = capsys.readouterr().out
    assert "running reg run 'again_scratch_n16_s0' locally" in out and "again_scratch_n8_s0' locally" not in out
    assert (runs / "again_scratch_n8_s0" / "starts.txt").read_text() == "0\n"  # not started again
    epochs = yaml.safe_load((runs / "again_scratch_n16_s0" / "config.yaml").read_text())["training"]["epochs"]
    # continued from its last.pt (the stand-in trains one step per epoch)
    assert (runs / "again_scratch_n16_s0" / "starts.txt").read_text() == f"0\n{epochs}\n"
    assert "label-efficiency study written" in out
    assert len(_rows(runs / "again" / "labels.csv")) == 4  # scratch and classical at N = 8 and 16


def test_bad_study_input_exits_2_with_one_line(study_workspace, capsys):
    assert _labels(study_workspace, "--events", "8,4") == 2
    assert "increasing, distinct" in capsys.readouterr().err
    assert _labels(study_workspace, "--events", "8", env={"CPU_PROCS": "2"}) == 2
    assert "one process" in capsys.readouterr().err
    assert not study_workspace["runs"].exists()


def test_dry_run_plans_every_point_without_torch_or_files(study_workspace):
    probe = ("import sys; from lib.study.__main__ import main; "
             f"code = main(['labels', '--config', {study_workspace['reg']!r}, '--mae', {study_workspace['encoder']!r}, "
             "'--events', '8,16', '--seeds', '1', '--dry-run'], {'EXECUTOR': 'local', 'CPU_PROCS': '1'}); "
             "assert code == 0, code; assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("== job ") == 6 and "labels_reg_frozen_n16_s0" in result.stdout
    assert not study_workspace["runs"].exists()


def test_run_study_wrapper_is_thin_and_documents_every_knob():
    from jobs.knobs import KNOBS

    text = (REPO / "jobs" / "run_study.sh").read_text()
    code = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert code == ["set -euo pipefail", 'exec "${PYTHON:-python}" -m lib.study labels "$@"']
    for knob in KNOBS:
        default = r"labels_<config name>" if knob.env == "RUN_NAME" else knob.default_text()
        assert re.search(rf"^#\s+{knob.env}\s.*\[{re.escape(default)}\]$", text, re.M), knob.env


def test_an_unfinished_point_started_with_other_settings_is_not_continued(study_workspace, capsys):
    args = ["--name", "moved", "--events", "8", "--seeds", "1", "--modes", "scratch"]
    assert _labels(study_workspace, *args, "--steps", "4") == 0
    run_dir = study_workspace["runs"] / "moved_scratch_n8_s0"
    (run_dir / "DONE").unlink()
    last = (run_dir / "checkpoints" / "last.pt").read_bytes()
    assert _labels(study_workspace, *args, "--steps", "6") == 2
    err = capsys.readouterr().err
    assert "point moved_scratch_n8_s0 was started with other settings (training.epochs 2 there, 3 now)" in err
    assert (run_dir / "checkpoints" / "last.pt").read_bytes() == last


def test_partial_report_uses_the_finished_points_and_submits_nothing(study_workspace, capsys):
    args = ["--name", "part", "--events", "8,16", "--seeds", "1", "--steps", "4", "--modes", "scratch"]
    assert _labels(study_workspace, *args, "--partial") == 2
    assert "no point of the study has finished yet" in capsys.readouterr().err
    assert _labels(study_workspace, *args) == 0
    (study_workspace["runs"] / "part_scratch_n16_s0" / "DONE").unlink()
    capsys.readouterr()
    assert _labels(study_workspace, *args, "--partial") == 0
    assert "locally" not in capsys.readouterr().out  # nothing trained
    assert {row["events"] for row in _rows(study_workspace["runs"] / "part" / "labels.csv")} == {"8"}
    assert "- partial report: 1 of 2 points finished" in (study_workspace["runs"] / "part" / "labels.md").read_text()
