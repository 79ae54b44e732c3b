"""`python -m lib.export --part inpainter`: the dead channels' npho and time in physical units, the same values
as the trained inpainter in PyTorch (lib.recipes.inpainting.load_inpainter), and refusals of other parts."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lib.evaluation.export_check import simulated_events, with_dead_channels
from lib.evaluation.exported_model import load_exported_model
from lib.normalization import normalize
from lib.recipes.inpainting import load_inpainter
from tests.evaluation.export_helpers import CHECK_EVENTS, run_export

OUTPUTS = ["inpainted_npho", "inpainted_time", "dead"]


def _export(checkpoint: Path, out: Path, fmt: str, *extra: str) -> tuple[int, str]:
    return run_export(["--checkpoint", str(checkpoint), "--format", fmt, "--out", str(out),
                       "--events", str(CHECK_EVENTS), "--part", "inpainter", *extra])


def _assert_fills_the_dead_channels_as_the_inpainter_does(checkpoint: Path, out: Path) -> None:
    model = load_exported_model(out)
    assert model.metadata["part"] == "inpainter" and model.output_names == OUTPUTS
    assert [o["unit"] for o in model.metadata["outputs"]] == ["photo-electrons", "s", ""]
    npho, time = with_dead_channels(*simulated_events(4, seed=8), seed=9)
    got = model(npho, time)
    inpainter = load_inpainter(checkpoint)
    x, npho_valid, time_valid = (torch.from_numpy(a) for a in normalize(npho, time, inpainter.cfg.normalization))
    dead = ~npho_valid.numpy()
    assert dead[4:].sum() > dead[:4].sum()  # the copies with injected dead channels have more
    np.testing.assert_array_equal(got["dead"], dead.astype(np.float32))
    expected = inpainter.fill({"x": x, "npho_valid": npho_valid, "time_valid": time_valid}, dead)
    for channel in ("npho", "time"):
        values = got[f"inpainted_{channel}"]
        assert (values[~dead] == 0).all()
        scale = np.sqrt(np.mean(expected[channel][dead] ** 2))
        np.testing.assert_allclose(values[dead], expected[channel][dead], rtol=0, atol=1e-4 * scale)


def test_torchscript_inpainter_fills_the_dead_channels_as_the_inpainter_does(export_inp_checkpoint, tmp_path):
    out = tmp_path / "inpainter.torchscript.pt"
    code, text = _export(export_inp_checkpoint, out, "torchscript")
    assert code == 0, text
    assert all(f"parity {name}" in text for name in OUTPUTS)
    _assert_fills_the_dead_channels_as_the_inpainter_does(export_inp_checkpoint, out)


@pytest.mark.slow
def test_onnx_inpainter_fills_the_dead_channels_as_the_inpainter_does(export_inp_checkpoint, tmp_path):
    out = tmp_path / "inpainter.onnx"
    code, text = _export(export_inp_checkpoint, out, "onnx")
    assert code == 0, text
    _assert_fills_the_dead_channels_as_the_inpainter_does(export_inp_checkpoint, out)


def test_inpainter_checkpoint_given_to_a_regressor_export_is_refused(export_inp_checkpoint, tmp_path):
    out = tmp_path / "x.pt"
    code, text = run_export(["--checkpoint", str(export_inp_checkpoint), "--format", "torchscript", "--out", str(out)])
    assert code == 2 and "inpainter checkpoint" in text and "--part inpainter" in text
    assert not out.exists()


def test_mae_checkpoint_given_to_an_inpainter_export_is_refused(mae_run_dir, tmp_path):
    out = tmp_path / "x.pt"
    code, text = _export(mae_run_dir / "checkpoints" / "last.pt", out, "torchscript")
    assert code == 2 and "no inpainter checkpoint" in text and "lib.train_inpainter" in text
    assert not out.exists()
