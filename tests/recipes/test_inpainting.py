"""End to end: MAE encoder -> `python -m lib.train_inpainter` in-process on tiny simulated data (artifacts,
frozen encoder, resume, bad input)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lib import train_inpainter
from lib.config import InpainterConfig, MAEConfig, load_config, load_resolved
from lib.data.build import build_loader
from lib.engine import load_checkpoint
from lib.evaluation.prediction_files import read_predictions
from lib.geometry import face_ids
from lib.models.encoder import XECEncoder
from lib.recipes.inpainting import INPAINTER_PREFIX, PREDICTIONS_NAME, load_inpainter
from lib.recipes.transfer import save_encoder
from tests.fixtures_e2e import (  # noqa: F401 (fixtures)
    MAE_CONFIG, STEPS_PER_EPOCH, VAL_EVENTS, detach_run_logs, differing_tensors, e2e_data, e2e_env, inp_args,
    isolate_run, mae_run, mlflow_runs, new_save_dir, one_thread, read_history, refused_at_parse_message,
    refused_message, save_dir,
)

pytestmark = pytest.mark.usefixtures("e2e_env")
ENCODER_PREFIX = f"{INPAINTER_PREFIX}encoder."
CONSTANT_LR = ("--set", "training.scheduler=none")
CHEAP = ("--epochs", "1", "--set", "data.val_path=null", "--set", "mlflow.enabled=false")
"""One epoch, no validation (no predictions), no tracking: for runs that only need to start."""


def _encoder_of(checkpoint: Path) -> dict[str, torch.Tensor]:
    model = load_checkpoint(checkpoint)["model"]
    return {k[len(ENCODER_PREFIX):]: v for k, v in model.items() if k.startswith(ENCODER_PREFIX)}


def _exported_encoder(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["encoder"]


def _dead_list(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def inp_run(tmp_path_factory, e2e_data, mae_run, one_thread) -> tuple[Path, Path, int]:
    """Inpainter trained for 2 epochs from the MAE run's encoder_best.pt: (run_dir, encoder path, exit code)."""
    save = new_save_dir(tmp_path_factory.mktemp("inp_run"), e2e_data)
    encoder = mae_run.run_dir / "encoder_best.pt"
    with pytest.MonkeyPatch.context() as patch:
        isolate_run(patch)
        code = train_inpainter.main(inp_args(e2e_data, save, "inp_e2e", "--epochs", "2",
                                             "--mae_checkpoint", str(encoder)))
    detach_run_logs()
    return save / "inp_e2e", encoder, code


# ------------------------------------------------------------------------------------------------ e2e
def test_inpainter_run_fills_the_run_directory(inp_run):
    run_dir, encoder, code = inp_run
    assert code == 0 and (run_dir / "DONE").is_file()
    cfg = load_resolved(run_dir / "config.yaml", InpainterConfig)
    assert cfg.model.pretrained_encoder == str(encoder) and cfg.training.mask_ratio == 0.05
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert last["epoch"] == 2 and last["global_step"] == 2 * STEPS_PER_EPOCH
    assert [r["epoch"] for r in read_history(run_dir)] == [1, 2]
    report = json.loads((run_dir / "pretrained_encoder.json").read_text())
    assert report["path"] == str(encoder) and report["normalization_differs"] == []


def test_validation_predictions_are_physical_at_the_masked_sensors_only(inp_run):
    run_dir, _, _ = inp_run
    arrays, metadata = read_predictions(run_dir / "predictions" / PREDICTIONS_NAME)
    mask = arrays["mask"]
    assert len(mask) == VAL_EVENTS and metadata["model"] == "inpainter"
    assert not (mask & ~arrays["npho_valid"]).any()  # only sensors with truth are masked
    ratio = mask.sum(1) / arrays["npho_valid"].sum(1)
    assert np.allclose(ratio, 0.05, atol=1e-3)
    assert np.isfinite(arrays["pred_npho"][mask]).all() and np.isnan(arrays["pred_npho"][~mask]).all()
    assert np.median(np.abs(arrays["pred_npho"][mask])) > 1  # photo-electrons, not normalized units


def test_inpainter_is_compared_with_the_baselines_in_the_log_metrics_and_mlflow(inp_run):
    run_dir, _, _ = inp_run
    arrays, metadata = read_predictions(run_dir / "predictions" / PREDICTIONS_NAME)
    assert metadata["baselines"] == ["neighbour", "solid_angle"]
    for name in metadata["baselines"]:
        np.testing.assert_array_equal(np.isfinite(arrays[f"{name}_npho"]), arrays["mask"])
    npho = json.loads((run_dir / "metrics.json").read_text())["masked_sensors"]["npho"]
    assert set(npho["fillers"]) == {"inpainter", "neighbour", "solid_angle"}
    error = np.abs(arrays["pred_npho"] - arrays["input_npho"])[arrays["mask"]].mean()
    assert npho["fillers"]["inpainter"]["all"]["mae"] == pytest.approx(error, rel=1e-4)
    assert "inpainter/neighbour" in npho["ratio"]
    (run,) = mlflow_runs(run_dir.parent)
    assert run.data.metrics["masked/npho/inpainter/all/mae"] == pytest.approx(error, rel=1e-4)


def test_loaded_inpainter_fills_any_mask_in_physical_units(inp_run):
    run_dir, _, _ = inp_run
    inpainter = load_inpainter(run_dir / "checkpoints" / "best.pt")
    batch = next(iter(build_loader(inpainter.cfg, "val", 0, 1)))
    mask = torch.zeros_like(batch["npho_valid"])
    mask[:, np.array(face_ids("inner")[:50])] = True
    filled = inpainter.fill(batch, mask)
    assert set(filled) == {"npho"}
    assert np.isfinite(filled["npho"][mask.numpy()]).all() and np.isnan(filled["npho"][~mask.numpy()]).all()


def test_load_inpainter_refuses_another_run_kind(mae_run):
    from lib.engine import CheckpointError

    with pytest.raises(CheckpointError, match="without inpainter weights"):
        load_inpainter(mae_run.run_dir / "checkpoints" / "best.pt")


def test_frozen_encoder_keeps_the_pretrained_weights_and_a_trained_one_does_not(e2e_data, save_dir, mae_run):
    encoder = mae_run.run_dir / "encoder_best.pt"
    pretrained = _exported_encoder(encoder)
    for name, freeze in {"frozen": "true", "tuned": "false"}.items():
        args = inp_args(e2e_data, save_dir, name, "--mae_checkpoint", str(encoder),
                        "--set", f"model.freeze_encoder={freeze}", *CHEAP)
        assert train_inpainter.main(args) == 0
    assert differing_tensors(_encoder_of(save_dir / "frozen" / "checkpoints" / "last.pt"), pretrained) == []
    assert differing_tensors(_encoder_of(save_dir / "tuned" / "checkpoints" / "last.pt"), pretrained) != []


# --------------------------------------------------------------------------------------------- resume
def test_resume_after_an_epoch_is_bit_identical_with_dead_patterns(e2e_data, tmp_path):
    dead = _dead_list(tmp_path / "dead.txt", ["1 0", "1 5", "1 4000", "2 17", "2 3000", "2 4759"])
    masks = ("--mask_mode", "mixed", "--dead_channels", str(dead), *CONSTANT_LR)
    straight_dir, resumed_dir = new_save_dir(tmp_path / "a", e2e_data), new_save_dir(tmp_path / "b", e2e_data)
    assert train_inpainter.main(inp_args(e2e_data, straight_dir, "a", "--epochs", "2", *masks)) == 0
    args = inp_args(e2e_data, resumed_dir, "b", *masks)
    assert train_inpainter.main([*args, "--epochs", "1"]) == 0
    last = resumed_dir / "b" / "checkpoints" / "last.pt"
    assert train_inpainter.main([*args, "--epochs", "2", "--resume_from", str(last)]) == 0
    expected, actual = load_checkpoint(straight_dir / "a" / "checkpoints" / "last.pt"), load_checkpoint(last)
    assert (actual["epoch"], actual["global_step"]) == (expected["epoch"], expected["global_step"]) == (2, 4)
    assert differing_tensors(expected["model"], actual["model"]) == []


# ------------------------------------------------------------------------------------------- bad input
def test_mae_encoder_of_another_architecture_is_refused(e2e_data, save_dir, tmp_path, caplog):
    other = load_config(MAE_CONFIG, ["model.encoder_dim=96"], root=MAEConfig)
    path = tmp_path / "encoder_best.pt"
    save_encoder(XECEncoder(other.model), other.model, other.normalization, path, source={"run_name": "other"})
    message = refused_message(train_inpainter.main, caplog,
                              inp_args(e2e_data, save_dir, "arch", "--mae_checkpoint", str(path), *CHEAP))
    assert "model.encoder_dim" in message and str(path) in message and "for this run" in message
    assert not (save_dir / "arch").exists()


def test_mae_encoder_of_another_normalization_is_refused_unless_allowed(e2e_data, save_dir, mae_run, caplog):
    args = inp_args(e2e_data, save_dir, "norm", "--mae_checkpoint", str(mae_run.run_dir / "encoder_best.pt"),
                    "--set", "normalization.npho_scale=500", *CHEAP)
    message = refused_message(train_inpainter.main, caplog, args)
    assert "normalization.npho_scale" in message and "--allow_normalization_mismatch" in message
    assert not (save_dir / "norm").exists()
    assert train_inpainter.main([*args, "--allow_normalization_mismatch"]) == 0
    assert json.loads((save_dir / "norm" / "pretrained_encoder.json").read_text())["normalization_differs"] == [
        "npho_scale"]


@pytest.mark.parametrize("ratio", ["0", "1", "1.5"])
def test_mask_ratio_zero_or_at_least_one_is_refused_at_parse(e2e_data, save_dir, capsys, ratio):
    message = refused_at_parse_message(train_inpainter.main, capsys,
                                       inp_args(e2e_data, save_dir, "ratio", "--set", f"training.mask_ratio={ratio}"))
    assert "training.mask_ratio" in message and "0.0 < mask_ratio < 1.0" in message
    assert not (save_dir / "ratio").exists()


def test_dead_pattern_killing_a_whole_face_is_refused_before_the_run_directory(e2e_data, save_dir, tmp_path, caplog):
    dead = _dead_list(tmp_path / "dead.txt", ["5 12", *(f"6 {sensor}" for sensor in face_ids("top"))])
    message = refused_message(train_inpainter.main, caplog, inp_args(
        e2e_data, save_dir, "face", "--mask_mode", "dead_pattern", "--dead_channels", str(dead), *CHEAP))
    assert str(dead) in message and "top" in message and "run 6" in message
    assert not (save_dir / "face").exists()
