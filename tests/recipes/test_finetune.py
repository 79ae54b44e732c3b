"""End to end: MAE encoder -> `python -m lib.train_regressor` in-process on tiny simulated data."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

import lib.plots.regression
from lib import train_regressor
from lib.config import RegressorConfig, load_config, load_resolved, parse_args, to_dict
from lib.engine import load_checkpoint
from lib.engine.checkpoint import save_checkpoint
from lib.data.build import build_loader
from lib.engine.distributed import DistInfo
from lib.io.run_files import MLFLOW_RUN_ID_NAME
from lib.recipes import finetune
from lib.recipes.finetune import build_regressor
from tests.fixtures_e2e import (
    REG_CONFIG, STEPS_PER_EPOCH, TRAIN_EVENTS, VAL_EVENTS, E2EData, detach_run_logs, e2e_data, e2e_env, isolate_run,
    mae_run, mlflow_client, new_save_dir, one_thread, read_history, refused_at_parse_message, refused_message, reg_args,
    save_dir, write_npz_shard,  # noqa: F401 (fixtures)
)

pytestmark = pytest.mark.usefixtures("e2e_env")
HEADLINE = ("E_rel_w68_pct", "dist3d_68")
CHEAP = ("--epochs", "1", "--set", "data.val_path=null", "--set", "mlflow.enabled=false")
"""One epoch, no validation (so no final evaluation), no tracking: for runs that only need to start."""


def _refused(caplog, argv: list[str]) -> str:
    return refused_message(train_regressor.main, caplog, argv)


def _refused_at_parse(capsys, argv: list[str]) -> str:
    return refused_at_parse_message(train_regressor.main, capsys, argv)


def _with_train_path(data: E2EData, train: Path) -> E2EData:
    return E2EData(train, data.val, data.mlflow_template)


# ------------------------------------------------------------------------------------------------ e2e
@pytest.fixture(scope="module")
def reg_run(tmp_path_factory, e2e_data, mae_run, one_thread) -> tuple[Path, Path, int]:
    """Regressor (demo config: tasks energy + position) fine-tuned for 2 epochs from the MAE run's encoder_best.pt.

    Returns (run_dir, encoder path, exit code)."""
    save = new_save_dir(tmp_path_factory.mktemp("reg_run"), e2e_data)
    encoder = mae_run.run_dir / "encoder_best.pt"
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch, plots=True)
        patch.setattr(lib.plots.regression, "plot_learning_curves", lambda *args, **kwargs: [])  # tested on MAE
        code = train_regressor.main(reg_args(e2e_data, save, "reg_e2e", "--epochs", "2",
                                             "--pretrained_encoder", str(encoder)))
    detach_run_logs()
    return save / "reg_e2e", encoder, code


def test_fine_tuning_writes_predictions_metrics_and_plots(reg_run):
    run_dir, encoder, code = reg_run
    assert code == 0 and (run_dir / "DONE").is_file()
    with uproot.open(run_dir / "predictions" / "predictions_val.root") as file:
        tree = file["tree"].arrays(library="np")
        assert file["metadata"].num_entries > 0
    for output in ("E", "u", "v", "w"):
        assert len(tree[f"truth_{output}"]) == VAL_EVENTS
        np.testing.assert_allclose(tree[f"error_{output}"], tree[f"pred_{output}"] - tree[f"truth_{output}"],
                                   rtol=1e-6, atol=1e-9)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    for method in ("regressor", "baseline"):
        assert set(HEADLINE) <= set(metrics[method]), method
    relative_pct = 100 * tree["error_E"] / tree["truth_E"]
    low, high = np.percentile(relative_pct, [15.865, 84.135])
    assert metrics["regressor"]["E_rel_w68_pct"] == pytest.approx((high - low) / 2, rel=1e-5)
    distance = np.sqrt(sum(tree[f"error_{c}"].astype(np.float64) ** 2 for c in "uvw"))
    assert metrics["regressor"]["dist3d_68"] == pytest.approx(np.percentile(distance, 68.27), rel=1e-5)
    assert list((run_dir / "plots").glob("*.png"))

    report = json.loads((run_dir / "pretrained_encoder.json").read_text())
    assert Path(report["path"]) == encoder
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    cfg = load_resolved(run_dir / "config.yaml", RegressorConfig)
    assert Path(cfg.model.pretrained_encoder) == encoder and list(cfg.tasks) == ["energy", "position"]


def test_resolutions_are_quoted_for_all_events_and_inside_the_fiducial_volume(reg_run):
    run_dir = reg_run[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with uproot.open(run_dir / "predictions" / "predictions_val.root") as file:
        tree = file["tree"].arrays(library="np")
    u, v, w = (tree[f"truth_{c}"] for c in "uvw")
    inside = (abs(u) <= 23.9) & (abs(v) <= 67.9) & (w >= 0) & (w <= 42)  # MEG II's fiducial volume (xectools)
    assert 2 <= inside.sum() < VAL_EVENTS
    np.testing.assert_array_equal(tree["in_fiducial"], inside)
    assert metrics["events"] == {"all": VAL_EVENTS, "fiducial": int(inside.sum())}
    relative_pct = 100 * tree["error_E"][inside] / tree["truth_E"][inside]
    low, high = np.percentile(relative_pct, [15.865, 84.135])
    assert metrics["regressor_fiducial"]["E_rel_w68_pct"] == pytest.approx((high - low) / 2, rel=1e-5)
    assert set(HEADLINE) <= set(metrics["baseline_fiducial"])
    run = mlflow_client(run_dir.parent).get_run(load_checkpoint(run_dir / "checkpoints" / "last.pt")["mlflow_run_id"])
    assert run.data.metrics["final_fiducial/E_rel_w68_pct"] == pytest.approx(metrics["regressor_fiducial"]["E_rel_w68_pct"])


def test_energy_resolution_fit_and_worst_events_of_the_final_evaluation(reg_run):
    run_dir = reg_run[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    section = metrics["energy_resolution"]
    assert section["estimator"] == "w68" and set(section) >= {"all", "fiducial"}
    for selection in ("all", "fiducial"):
        assert set(section[selection]) == {"regressor", "baseline"}
        points = section[selection]["regressor"]["points"]
        assert sum(points["events"]) == metrics["events"][selection] and len(points["energy_GeV"]) >= 4
    fit = section["all"]["regressor"]["fit"]
    assert fit is not None and all(np.isfinite(fit[term]) and fit[term] >= 0 for term in "abc")
    run = mlflow_client(run_dir.parent).get_run((run_dir / MLFLOW_RUN_ID_NAME).read_text().strip())
    assert run.data.metrics["energy_fit/all_regressor_a"] == pytest.approx(fit["a"])
    assert (run_dir / "plots" / "energy_resolution_fit.png").is_file()

    with uproot.open(run_dir / "predictions" / "predictions_val.root") as file:
        tree = file["tree"].arrays(library="np")
    worst = json.loads((run_dir / "worst_events.json").read_text())
    energy = [entry for entry in worst if entry["task"] == "energy"]
    assert len(energy) == 3 and {entry["task"] for entry in worst} == {"energy", "position"}
    row = int(np.argmax(np.abs(tree["error_E"])))
    assert (energy[0]["run"], energy[0]["event"]) == (tree["run"][row], tree["event"][row])
    assert energy[0]["truth"]["E"] == pytest.approx(tree["truth_E"][row])
    displays = sorted(p.name for p in (run_dir / "plots" / "worst_events").glob("*.png"))
    assert displays == [f"{task}_{rank}.png" for task in ("energy", "position") for rank in (1, 2, 3)]


def test_validation_and_final_evaluation_give_the_same_resolutions(reg_run):
    # one resolution computation: the best epoch's validation metrics (training_history.json) are those
    # of the final evaluation of best.pt (metrics.json) on the same events (the demo config keeps no EMA)
    run_dir = reg_run[0]
    history = json.loads((run_dir / "training_history.json").read_text())
    best = min(history, key=lambda record: record["val/total_loss"])
    final = json.loads((run_dir / "metrics.json").read_text())["regressor"]
    for key in HEADLINE:
        assert best[f"val/{key}"] == pytest.approx(final[key], rel=1e-6), key


def test_fine_tuning_logs_final_and_baseline_metrics_to_mlflow(reg_run):
    run_dir = reg_run[0]
    run = mlflow_client(run_dir.parent).get_run((run_dir / MLFLOW_RUN_ID_NAME).read_text().strip())
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in HEADLINE:
        assert run.data.metrics[f"final/{key}"] == pytest.approx(metrics["regressor"][key])
        assert run.data.metrics[f"baseline/{key}"] == pytest.approx(metrics["baseline"][key])
    assert run.info.status == "FINISHED"


def test_final_evaluation_covers_every_validation_event(e2e_data, save_dir):
    batch = 12  # does not divide the 16 validation events
    args = [*reg_args(e2e_data, save_dir, "all_val", "--epochs", "1", "--batch_size", str(batch)),
            "--set", "mlflow.enabled=false", "--set", "baseline.enabled=false"]
    assert train_regressor.main(args) == 0
    with uproot.open(save_dir / "all_val" / "predictions" / "predictions_val.root") as file:
        assert file["tree"].num_entries == VAL_EVENTS


def test_target_standardization_and_reweighting_are_fitted_on_the_training_events_only(e2e_data):
    overrides = [f"data.train_path={e2e_data.train}", "data.max_events=20", "data.batch_size=4",
                 "tasks={energy: {reweight_bins: 4}}"]
    cfg = load_config(REG_CONFIG, overrides=overrides, root=RegressorConfig)
    loader = build_loader(cfg, "train", 0, 1)
    model, _ = finetune.build(cfg, DistInfo(0, 1, 0, torch.device("cpu")), loader)
    energy = model.tasks["energy"]
    truth = [uproot.open(info.path)["tree"]["energyTruth"].array(library="np").astype(np.float64)
             for info in loader.files]
    used = np.concatenate(truth)[:20]  # the first 20 events over the files, in order: what the run trains on
    assert energy.standardizer.mean.item() == pytest.approx(used.mean(), rel=1e-12)
    assert energy.standardizer.scale.item() == pytest.approx(used.std(ddof=1), rel=1e-12)
    assert abs(np.concatenate(truth).mean() - used.mean()) > 1e-6  # the whole files would give another fit
    edges = energy.reweighting.edges[0]
    assert (edges[0].item(), edges[-1].item()) == pytest.approx((used.min(), used.max()))


# --------------------------------------------------------------------------------------------- resume
def test_resume_continues_the_epoch_count(e2e_data, save_dir):
    args = [*reg_args(e2e_data, save_dir, "r"), *CHEAP]
    assert train_regressor.main(args) == 0
    last = save_dir / "r" / "checkpoints" / "last.pt"
    assert train_regressor.main([*args, "--epochs", "2", "--resume_from", str(last)]) == 0
    checkpoint = load_checkpoint(last)
    assert (checkpoint["epoch"], checkpoint["global_step"]) == (2, 2 * STEPS_PER_EPOCH)
    assert [r["epoch"] for r in read_history(save_dir / "r")] == [1, 2]


# ------------------------------------------------------------------------------------------ bad input
def test_tasks_flag_selects_several_tasks():
    cfg, _ = parse_args(["--config", str(REG_CONFIG), "--tasks", "energy", "timing"], root=RegressorConfig,
                        extra_flags=train_regressor.EXTRA_FLAGS)
    assert list(cfg.tasks) == ["energy", "timing"]


@pytest.mark.parametrize("tasks, expected", [
    ("[]", "selection is empty"), ("[energi]", "did you mean 'energy'"),
    ("{energy: {weight: .inf}}", "finite number"),
    ("{energy: {target_mean: [.nan], target_scale: [1.0]}}", "finite number"),
], ids=["empty", "misspelt", "weight-inf", "target-mean-nan"])
def test_bad_task_selection_is_refused(e2e_data, save_dir, capsys, tasks, expected):
    message = _refused_at_parse(capsys, reg_args(e2e_data, save_dir, "tasks", "--set", f"tasks={tasks}"))
    assert expected in message
    assert not (save_dir / "tasks").exists()


def test_missing_truth_branch_of_a_selected_task_is_refused(e2e_data, save_dir, tmp_path, caplog):
    write_npz_shard(tmp_path / "no_energy" / "shard_0000.npz", TRAIN_EVENTS, seed=3, drop=("energyTruth",))
    data = _with_train_path(e2e_data, tmp_path / "no_energy")
    message = _refused(caplog, reg_args(data, save_dir, "truth"))
    assert "energyTruth" in message and "'energy'" in message
    assert not (save_dir / "truth").exists()


def test_missing_pretrained_encoder_is_refused_before_the_run_directory(e2e_data, save_dir, tmp_path, caplog):
    path = tmp_path / "nowhere" / "encoder_best.pt"
    message = _refused(caplog, reg_args(e2e_data, save_dir, "pre", "--pretrained_encoder", str(path)))
    assert str(path) in message and "does not exist" in message
    assert not (save_dir / "pre").exists()


def test_regressor_checkpoint_of_another_architecture_is_refused(e2e_data, save_dir, tmp_path, caplog):
    other = load_config(REG_CONFIG, ["model.encoder_dim=96"], root=RegressorConfig)
    path = tmp_path / "other.pt"
    save_checkpoint({"schema_version": other.schema_version, "config": to_dict(other),
                     "model": build_regressor(other).state_dict(), "ema": None}, path)
    message = _refused(caplog, reg_args(e2e_data, save_dir, "arch", "--pretrained_encoder", str(path)))
    assert "model.encoder_dim" in message and str(path) in message
    assert not (save_dir / "arch").exists()


def test_normalization_mismatch_is_refused_unless_allowed(e2e_data, save_dir, mae_run, caplog):
    args = reg_args(e2e_data, save_dir, "norm", "--pretrained_encoder", str(mae_run.run_dir / "encoder_best.pt"),
                    "--set", "normalization.npho_scale=500", *CHEAP)
    message = _refused(caplog, args)
    assert "normalization.npho_scale" in message and "--allow_normalization_mismatch" in message
    assert not (save_dir / "norm").exists()

    assert train_regressor.main([*args, "--allow_normalization_mismatch"]) == 0
    report = json.loads((save_dir / "norm" / "pretrained_encoder.json").read_text())
    assert report["normalization_differs"] == ["npho_scale"]


def test_trainable_layers_above_the_number_of_stage_groups_is_refused(e2e_data, save_dir, caplog):
    message = _refused(caplog, reg_args(e2e_data, save_dir, "layers", "--set", "model.trainable_layers=99"))
    assert "model.trainable_layers=99" in message
    assert not (save_dir / "layers").exists()


def test_events_with_nan_or_fill_value_truth_are_skipped_and_counted_per_task(e2e_data, save_dir, tmp_path):
    # 1e10 is the experiment's "missing"; it once trained into resolutions of 7e11 % with exit code 0
    nan_rows, fill_rows, val_fill_rows = (2, 30), (17,), (3, 9)
    train = write_npz_shard(tmp_path / "train" / "shard_0000.npz", TRAIN_EVENTS, seed=4, nan_energy_rows=nan_rows,
                            fill_energy_rows=fill_rows)
    val = write_npz_shard(tmp_path / "val" / "shard_0000.npz", VAL_EVENTS, seed=5, fill_energy_rows=val_fill_rows)
    data = E2EData(train, val, e2e_data.mlflow_template)
    args = [*reg_args(data, save_dir, "fill"), "--epochs", "1", "--set", "baseline.enabled=false"]
    assert train_regressor.main(args) == 0
    (record,) = read_history(save_dir / "fill")
    assert np.isfinite(record["train/total_loss"]) and np.isfinite(record["train/loss_energy"])
    train_skipped, val_skipped = 3 / TRAIN_EVENTS, len(val_fill_rows) / VAL_EVENTS
    assert record["train/skipped_fraction_energy"] == pytest.approx(train_skipped)
    assert record["train/skipped_fraction_position"] == 0.0
    assert record["val/skipped_fraction_energy"] == pytest.approx(val_skipped)
    assert f"train/skipped_fraction_energy {train_skipped:.5g}" in (save_dir / "fill" / "train.log").read_text()
    metrics = json.loads((save_dir / "fill" / "metrics.json").read_text())["regressor"]
    assert metrics["skipped_fraction_energy"] == pytest.approx(val_skipped)
    assert 0 < metrics["E_rel_w68_pct"] < 100
    checkpoint = load_checkpoint(save_dir / "fill" / "checkpoints" / "last.pt")
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point())
    assert float(checkpoint["model"]["tasks.energy.standardizer.mean"]) < 1.0
    logged = mlflow_client(save_dir).get_run(checkpoint["mlflow_run_id"]).data.metrics
    assert logged["train/skipped_fraction_energy"] == pytest.approx(train_skipped)
    assert logged["final/skipped_fraction_energy"] == pytest.approx(val_skipped)
