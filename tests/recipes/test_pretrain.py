"""End to end: `python -m lib.train_mae` in-process on tiny simulated data (artifacts, resume, bad input)."""
from __future__ import annotations

import logging
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import uproot

from lib import train_mae
from lib.config import MAEConfig, load_config, load_resolved
from lib.data.build import build_loader
from lib.engine import load_checkpoint
from lib.io.run_files import LOCK_NAME
from lib.recipes.pretrain import MAEModel, PretrainTask, validation_noise
from lib.recipes.transfer import ENCODER_KIND
from tests.fixtures_e2e import (
    BATCH, MAE_CONFIG, STEPS_PER_EPOCH, VAL_EVENTS, detach_run_logs, differing_tensors, e2e_data, e2e_env, isolate_run,
    mae_args, mae_run, mlflow_client, mlflow_runs, new_save_dir, one_thread, read_history, refused_at_parse_message,
    refused_message, save_dir, tree_listing,  # noqa: F401 (fixtures)
)

pytestmark = pytest.mark.usefixtures("e2e_env")
ENCODER_PREFIX = "mae.encoder."
CONSTANT_LR = ("--set", "training.scheduler=none")  # a schedule that does not depend on training.epochs


# ------------------------------------------------------------------------------------------------ e2e
def test_mae_run_fills_the_artifacts_tree(mae_run):
    run_dir = mae_run.run_dir
    assert mae_run.exit_code == 0
    assert (run_dir / "DONE").is_file()
    cfg = load_resolved(run_dir / "config.yaml", MAEConfig)
    assert (cfg.training.epochs, cfg.data.batch_size, cfg.checkpoint.run_name) == (mae_run.epochs, BATCH, "mae_e2e")

    last, best = load_checkpoint(run_dir / "checkpoints/last.pt"), load_checkpoint(run_dir / "checkpoints/best.pt")
    assert last["epoch"] == mae_run.epochs and last["global_step"] == mae_run.epochs * STEPS_PER_EPOCH
    for tag, checkpoint in {"last": last, "best": best}.items():
        export = torch.load(run_dir / f"encoder_{tag}.pt", map_location="cpu", weights_only=True)
        assert export["kind"] == ENCODER_KIND
        assert export["model"] == cfg.model.model_dump(mode="json")
        assert export["normalization"] == cfg.normalization.model_dump(mode="json")
        encoder = {k[len(ENCODER_PREFIX):]: v for k, v in checkpoint["model"].items() if k.startswith(ENCODER_PREFIX)}
        assert encoder and differing_tensors(export["encoder"], encoder) == [], tag

    history = read_history(run_dir)
    assert [r["epoch"] for r in history] == list(range(1, mae_run.epochs + 1))
    assert history[0]["train/total_loss"] > history[-1]["train/total_loss"]
    assert f"epoch {mae_run.epochs}/{mae_run.epochs} done" in (run_dir / "train.log").read_text()
    assert (run_dir / "plots" / "curve_total_loss.png").is_file()

    with uproot.open(run_dir / "predictions" / "mae_predictions_val.root") as file:
        tree = file["tree"]
        assert {"pred_npho", "pred_time", "mask", "input_npho", "npho_valid", "energyTruth"} <= set(tree.keys())
        assert tree.num_entries == VAL_EVENTS
        keys = [str(k) for k in file["metadata"]["key"].array(library="np")]
    assert {"predict_channels", "normalization", "checkpoint"} <= set(keys)


def test_mae_predictions_hold_the_raw_inputs_and_physical_reconstructions(mae_run, e2e_data):
    from lib.evaluation.prediction_files import read_predictions

    arrays, metadata = read_predictions(mae_run.run_dir / "predictions" / "mae_predictions_val.root")
    (val_file,) = e2e_data.val.glob("*.root")
    with uproot.open(val_file) as file:
        raw = file["tree"].arrays(["event", "npho", "relative_time"], library="np")
    rows = np.searchsorted(raw["event"], arrays["event"])
    np.testing.assert_array_equal(raw["event"][rows], arrays["event"])
    np.testing.assert_array_equal(arrays["input_npho"], raw["npho"][rows])  # the file's values, bit for bit
    np.testing.assert_array_equal(arrays["input_time"], raw["relative_time"][rows])
    assert metadata["units"] == {"npho": "photo-electrons", "time": "s"}
    # physical, not normalized (normalized values are O(0.01-1) for both channels)
    assert np.median(np.abs(arrays["pred_npho"])) > 1 and np.median(np.abs(arrays["pred_time"])) < 1e-6


def test_npho_weighted_time_loss_takes_the_loaders_time_weight(e2e_data):
    from lib.config import load_config
    from lib.data.build import build_loader

    cfg = load_config(MAE_CONFIG, ["training.time.use_npho_weight=true", f"data.train_path={e2e_data.train}",
                                   f"data.batch_size={BATCH}", "data.num_workers=0"])
    batch = next(iter(build_loader(cfg, "train", 0, 1)))
    loss, metrics, _ = MAEModel(cfg)(batch)
    assert torch.isfinite(loss) and metrics["loss_time"] > 0
    with pytest.raises(ValueError, match="use_npho_weight needs the batch's time_weight"):
        MAEModel(cfg)({key: value for key, value in batch.items() if key != "time_weight"})


def test_mae_run_is_one_mlflow_run_with_params_and_val_history(mae_run):
    (run,) = mlflow_runs(mae_run.save_dir)
    assert run.info.run_id == load_checkpoint(mae_run.run_dir / "checkpoints/last.pt")["mlflow_run_id"]
    assert run.data.params["training.epochs"] == str(mae_run.epochs)
    assert run.data.params["model.preset"] == "tiny"
    history = mlflow_client(mae_run.save_dir).get_metric_history(run.info.run_id, "val/total_loss")
    logged = [m.value for m in sorted(history, key=lambda m: m.step)]
    assert logged == pytest.approx([r["val/total_loss"] for r in read_history(mae_run.run_dir)])


# --------------------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, e2e_data, one_thread) -> Path:
    """Run A: 2 epochs without interruption (constant lr); returns its last.pt."""
    save = new_save_dir(tmp_path_factory.mktemp("straight"), e2e_data)
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch)
        assert train_mae.main(mae_args(e2e_data, save, "a", "--epochs", "2", *CONSTANT_LR)) == 0
    detach_run_logs()
    return save / "a" / "checkpoints" / "last.pt"


def _assert_same_final_state(expected_path: Path, actual_path: Path) -> dict:
    expected, actual = load_checkpoint(expected_path), load_checkpoint(actual_path)
    assert (actual["epoch"], actual["global_step"]) == (expected["epoch"], expected["global_step"])
    assert differing_tensors(expected["model"], actual["model"]) == []
    return actual


def test_resume_after_an_epoch_in_a_new_call_is_bit_identical(e2e_data, save_dir, straight_run):
    args = mae_args(e2e_data, save_dir, "b", *CONSTANT_LR)
    assert train_mae.main([*args, "--epochs", "1"]) == 0
    last = save_dir / "b" / "checkpoints" / "last.pt"
    first_run_id = load_checkpoint(last)["mlflow_run_id"]

    assert train_mae.main([*args, "--epochs", "2", "--resume_from", str(last)]) == 0
    resumed = _assert_same_final_state(straight_run, last)
    assert first_run_id is not None and resumed["mlflow_run_id"] == first_run_id
    (run,) = mlflow_runs(save_dir)
    assert run.info.run_id == first_run_id
    assert [r["epoch"] for r in read_history(save_dir / "b")] == [1, 2]


class SimulatedCrash(Exception):
    """Stands in for a process killed in the middle of an epoch."""


def test_resume_mid_epoch_from_a_step_checkpoint_is_bit_identical(e2e_data, save_dir, straight_run, monkeypatch):
    crash_at_step = STEPS_PER_EPOCH + 1  # second batch of epoch 2; last.pt was written after the first
    original_step = PretrainTask.training_step

    def crashing_step(self, model, batch, step):
        if step == crash_at_step:
            raise SimulatedCrash
        return original_step(self, model, batch, step)

    args = mae_args(e2e_data, save_dir, "c", "--epochs", "2", "--set", "checkpoint.save_every_steps=1", *CONSTANT_LR)
    with monkeypatch.context() as patch:
        patch.setattr(PretrainTask, "training_step", crashing_step)
        assert train_mae.main(args) == 1
    last = save_dir / "c" / "checkpoints" / "last.pt"
    interrupted = load_checkpoint(last)
    assert (interrupted["epoch"], interrupted["batch_in_epoch"], interrupted["global_step"]) == (1, 1, crash_at_step)

    assert train_mae.main([*args, "--resume_from", str(last)]) == 0
    resumed = _assert_same_final_state(straight_run, last)
    assert resumed["mlflow_run_id"] == interrupted["mlflow_run_id"]
    assert [r["epoch"] for r in read_history(save_dir / "c")] == [1, 2]


def test_validation_masks_are_fixed_per_event(e2e_data):
    """The same event gets the same validation mask in any batch, on any rank, in any epoch; training masks
    stay random."""
    cfg = load_config(MAE_CONFIG, overrides=[f"data.val_path={e2e_data.val}", f"data.batch_size={VAL_EVENTS}"],
                      root=MAEConfig)
    (batch,) = list(build_loader(cfg, "val", 0, 1))
    model, task = MAEModel(cfg).eval(), PretrainTask(cfg)
    with torch.no_grad():
        torch.manual_seed(1)
        mask = model(batch, validation_noise(batch))[2]["mask"]
        torch.manual_seed(2)
        regrouped = {key: value[[5, 3, 11]] for key, value in batch.items()}  # other batch, other order
        assert torch.equal(model(regrouped, validation_noise(regrouped))[2]["mask"], mask[[5, 3, 11]])
        losses = [task.validation_step(model, batch).loss for _ in range(2)]  # two epochs
        assert torch.equal(losses[0], losses[1])
        assert not torch.equal(model(batch)[2]["mask"], model(batch)[2]["mask"])  # training: fresh masks
    assert mask.sum(1).tolist() == torch.round(batch["npho_valid"].sum(1) * cfg.training.mask_ratio).tolist()


# ------------------------------------------------------------------------------------------ bad input
def _refused(caplog, argv: list[str]) -> str:
    return refused_message(train_mae.main, caplog, argv)


def _refused_at_parse(capsys, argv: list[str]) -> str:
    return refused_at_parse_message(train_mae.main, capsys, argv)


def test_unknown_key_in_the_yaml_is_refused(e2e_data, save_dir, tmp_path, capsys):
    config = tmp_path / "typo.yaml"
    config.write_text(MAE_CONFIG.read_text() + "\noptimiser:\n  lr: 1.0e-3\n")
    args = mae_args(e2e_data, save_dir, "typo")
    args[args.index("--config") + 1] = str(config)
    message = _refused_at_parse(capsys, args)
    assert "optimiser" in message and "unknown key" in message
    assert not (save_dir / "typo").exists()


@pytest.mark.parametrize("override, named", [
    ("training.ema.decy=0.9", "training.ema.decay"),
    ("training.mask_ratio=1.5", "training.mask_ratio"),
    ("training.epochs=0", "training.epochs"),
    ("training.lr=inf", "training.lr"),
    ("training.lr=nan", "training.lr"),
    ("training.lr=1e45", "training.lr"),
    ("training.betas=[0.9,.nan]", "training.betas"),
    ("normalization.time_scale=inf", "normalization.time_scale"),
    ("model.drop_path=nan", "model.drop_path"),
], ids=["misspelt-nested-key", "mask-ratio-above-1", "zero-epochs", "lr-inf", "lr-nan", "lr-overflow", "beta-nan",
        "normalization-inf", "model-nan"])
def test_invalid_config_values_are_refused(e2e_data, save_dir, capsys, override, named):
    message = _refused_at_parse(capsys, mae_args(e2e_data, save_dir, "bad", "--set", override))
    assert named in message and len([line for line in message.splitlines() if named in line]) == 1
    assert not (save_dir / "bad").exists()


def test_batch_larger_than_the_data_set_is_refused(e2e_data, save_dir, caplog):
    message = _refused(caplog, [*mae_args(e2e_data, save_dir, "big"), "--batch_size", "64"])
    assert "batch_size 64" in message and "larger than the data set" in message
    assert not (save_dir / "big").exists()


def _bad_resume_files(tmp_path: Path) -> dict[str, Path]:
    random_bytes, foreign = tmp_path / "random.pt", tmp_path / "foreign.pt"
    random_bytes.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    torch.save({"model": {"w": torch.zeros(2)}, "epoch": 3}, foreign)
    return {"missing": tmp_path / "nowhere" / "last.pt", "random-bytes": random_bytes, "no-marker": foreign}


@pytest.mark.parametrize("kind, expected", [
    ("missing", "does not exist"), ("random-bytes", "not a readable torch file"),
    ("no-marker", "not an xecmae checkpoint"),
])
def test_bad_resume_file_is_refused(e2e_data, save_dir, tmp_path, caplog, kind, expected):
    path = _bad_resume_files(tmp_path)[kind]
    message = _refused(caplog, mae_args(e2e_data, save_dir, "resume", "--resume_from", str(path)))
    assert str(path) in message and expected in message
    assert not (save_dir / "resume").exists()


def test_resume_with_another_model_config_is_refused(e2e_data, save_dir, mae_run, caplog):
    before = tree_listing(mae_run.run_dir)
    last = mae_run.run_dir / "checkpoints" / "last.pt"
    message = _refused(caplog, mae_args(e2e_data, save_dir, "wider", "--resume_from", str(last),
                                        "--set", "model.encoder_dim=96"))
    assert "model.encoder_dim: 64 -> 96" in message
    assert not (save_dir / "wider").exists()
    assert tree_listing(mae_run.run_dir) == before


def test_existing_run_directory_without_resume_is_left_untouched(e2e_data, mae_run, caplog):
    before = tree_listing(mae_run.run_dir)
    message = _refused(caplog, mae_args(e2e_data, mae_run.save_dir, mae_run.run_dir.name))
    assert str(mae_run.run_dir) in message and "already exists" in message and "--resume_from" in message
    after = tree_listing(mae_run.run_dir)
    assert after.pop(LOCK_NAME)[2] != before.pop(LOCK_NAME)[2]  # the lock file names the last trainer that held it
    assert after == before


def test_nan_loss_stops_with_exit_1_and_keeps_the_last_good_checkpoint(e2e_data, save_dir, caplog, monkeypatch):
    nan_from_call = 3
    calls = {"train": 0}
    original_forward = MAEModel.forward

    def forward(self, batch, *noise):
        loss, metrics, out = original_forward(self, batch, *noise)
        if self.training:
            calls["train"] += 1
            if calls["train"] >= nan_from_call:
                loss = loss * math.nan
        return loss, metrics, out

    monkeypatch.setattr(MAEModel, "forward", forward)
    args = mae_args(e2e_data, save_dir, "nan", "--epochs", "2", "--set", "checkpoint.save_every_steps=1")
    with caplog.at_level(logging.ERROR, logger="lib.engine.run"):
        assert train_mae.main(args) == 1
    assert "non-finite training loss" in caplog.text
    assert "non-finite training loss" in (save_dir / "nan" / "train.log").read_text()  # why the run ended
    last = load_checkpoint(save_dir / "nan" / "checkpoints" / "last.pt")
    assert last["global_step"] == nan_from_call - 1
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    assert not (save_dir / "nan" / "DONE").exists()


def test_unreachable_mlflow_does_not_stop_training(e2e_data, save_dir, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "1")
    args = mae_args(e2e_data, save_dir, "offline", "--epochs", "1", "--set", "mlflow.tracking_uri=http://127.0.0.1:1",
                    "--set", "training.num_val_predictions=0")
    with caplog.at_level(logging.WARNING, logger="lib.engine.tracking"):
        assert train_mae.main(args) == 0
    assert "http://127.0.0.1:1" in caplog.text
    (record,) = read_history(save_dir / "offline")
    assert math.isfinite(record["train/total_loss"]) and math.isfinite(record["val/total_loss"])
    assert (save_dir / "offline" / "DONE").is_file()


def test_run_log_is_released_when_the_run_returns(e2e_data, save_dir):
    args = mae_args(e2e_data, save_dir, "log", "--epochs", "1", "--set", "data.max_events=16",
                    "--set", "mlflow.enabled=false", "--set", "training.num_val_predictions=0")
    assert train_mae.main(args) == 0
    train_log = save_dir / "log" / "train.log"
    size = train_log.stat().st_size
    logging.getLogger("lib").warning("a message logged after the run returned")
    assert train_log.stat().st_size == size, "run_training left its train.log handler on the root logger"


def test_ctrl_c_saves_at_the_next_step_and_exits_75(e2e_data, save_dir, monkeypatch):
    original_step = PretrainTask.training_step

    def step_with_ctrl_c(self, model, batch, step):
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)
        return original_step(self, model, batch, step)

    monkeypatch.setattr(PretrainTask, "training_step", step_with_ctrl_c)
    args = mae_args(e2e_data, save_dir, "ctrl_c", "--epochs", "2", "--set", "training.num_val_predictions=0")
    assert train_mae.main(args) == 75
    assert load_checkpoint(save_dir / "ctrl_c" / "checkpoints" / "last.pt")["global_step"] == 1
    log_lines = (save_dir / "ctrl_c" / "train.log").read_text().splitlines()
    assert "received SIGINT" in "\n".join(log_lines) and "preempted at global step 1" in log_lines[-1]
    assert "Traceback" not in "\n".join(log_lines)


def test_a_second_ctrl_c_stops_at_once_with_exit_130(e2e_data, save_dir, monkeypatch):
    original_step = PretrainTask.training_step

    def step_with_two_ctrl_c(self, model, batch, step):
        if step == 0:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return original_step(self, model, batch, step)

    monkeypatch.setattr(PretrainTask, "training_step", step_with_two_ctrl_c)
    args = mae_args(e2e_data, save_dir, "ctrl_c_twice", "--epochs", "2", "--set", "training.num_val_predictions=0")
    assert train_mae.main(args) == 130
    assert not (save_dir / "ctrl_c_twice" / "checkpoints" / "last.pt").exists()
    assert "stopped at once by Ctrl-C" in (save_dir / "ctrl_c_twice" / "train.log").read_text().splitlines()[-1]
