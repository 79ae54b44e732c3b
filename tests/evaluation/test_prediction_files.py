"""Prediction files (lib.evaluation.prediction_files): write/read round trips, residual wrapping, bad input."""
from __future__ import annotations

import numpy as np
import pytest

from lib.geometry import N_SENSORS
from lib.normalization import CHANNEL_INDEX, NormalizationConfig, describe, normalize, npho_inverse, time_inverse
from lib.evaluation.prediction_files import (
    PredictionFileError,
    read_predictions,
    regression_outputs,
    write_mae_predictions,
    write_regression_predictions,
)

N = 6
NORMALIZATION = describe(NormalizationConfig())  # metadata of regressor files


def _regression_inputs(rng):
    truth = {"E": rng.uniform(0.02, 0.06, N), "u": rng.normal(0, 10, N),
             "phi": np.array([359.0, 1.0, 10.0, 180.0, 90.0, 0.5])}
    pred = {"E": truth["E"] + 0.001, "u": truth["u"] - 0.5,
            "phi": np.array([1.0, 359.0, 12.0, 0.0, 91.0, 180.5])}
    meta = {"tasks": ["energy", "position", "angle"], "normalization": NORMALIZATION,
            "checkpoint": "artifacts/run/checkpoints/best.pt", "split": "val", "epoch": 3}
    return truth, pred, meta


def _write_regression(path, rng, **changes):
    truth, pred, meta = _regression_inputs(rng)
    kwargs = {"run": np.full(N, 7), "event": np.arange(N) + 100, "truth": truth, "pred": pred,
              "sigma": {"E": np.full(N, 0.002)}, "metadata": meta, **changes}
    return write_regression_predictions(path, **kwargs), truth, pred, meta


def test_regression_round_trip_branches_values_and_metadata(tmp_path):
    path, truth, pred, meta = _write_regression(tmp_path / "pred.root", np.random.default_rng(0))
    arrays, metadata = read_predictions(path)

    expected = {"run", "event", "sigma_E"} | {f"{k}_{o}" for k in ("truth", "pred", "error") for o in truth}
    assert set(arrays) == expected
    assert arrays["run"].dtype == np.int64 and arrays["event"].dtype == np.int64
    np.testing.assert_array_equal(arrays["event"], np.arange(N) + 100)
    for output in truth:
        np.testing.assert_allclose(arrays[f"truth_{output}"], truth[output])
        np.testing.assert_allclose(arrays[f"pred_{output}"], pred[output])
    np.testing.assert_allclose(arrays["error_E"], pred["E"] - truth["E"])
    np.testing.assert_allclose(arrays["sigma_E"], 0.002)
    for key, value in meta.items():
        assert metadata[key] == value
    assert metadata["units"] == {"E": "GeV", "u": "cm", "phi": "deg"}
    assert regression_outputs(arrays, metadata) == ["E", "u", "phi"]
    assert [p.name for p in tmp_path.iterdir()] == ["pred.root"]  # no temporary file left


def test_phi_error_is_wrapped_into_half_open_interval(tmp_path):
    path, *_ = _write_regression(tmp_path / "pred.root", np.random.default_rng(1))
    arrays, _ = read_predictions(path)
    np.testing.assert_allclose(arrays["error_phi"], [2.0, -2.0, 2.0, -180.0, 1.0, -180.0])


def test_explicit_units_override_and_unknown_output_needs_a_unit(tmp_path):
    rng = np.random.default_rng(2)
    truth, pred, meta = _regression_inputs(rng)
    truth["q"], pred["q"] = np.zeros(N), np.ones(N)
    with pytest.raises(ValueError, match=r"no unit known for output\(s\) \['q'\]"):
        _write_regression(tmp_path / "a.root", rng, truth=truth, pred=pred)
    path, *_ = _write_regression(tmp_path / "b.root", rng, truth=truth, pred=pred,
                                 metadata={**meta, "units": {"q": "mm", "E": "MeV"}})
    assert read_predictions(path)[1]["units"] == {"E": "MeV", "u": "cm", "phi": "deg", "q": "mm"}


@pytest.mark.parametrize("change, message", [
    ({"metadata": {"tasks": ["energy", "position", "angle"]}}, "lacks the key"),
    ({"pred": {"E": np.zeros(N)}}, "pred has outputs"),
    ({"truth": {"E": np.zeros(N - 1), "u": np.zeros(N), "phi": np.zeros(N)}}, r"truth\['E'\] has shape"),
    ({"sigma": {"w": np.zeros(N)}}, "sigma has output"),
    ({"event": np.arange(N + 1)}, "run has"),
])
def test_bad_regression_input_raises_before_writing(tmp_path, change, message):
    path = tmp_path / "pred.root"
    path.write_bytes(b"earlier artifact")
    with pytest.raises(ValueError, match=message):
        _write_regression(path, np.random.default_rng(3), **change)
    assert path.read_bytes() == b"earlier artifact"
    assert [p.name for p in tmp_path.iterdir()] == ["pred.root"]


def _mae_inputs(rng, channels, norm=NormalizationConfig()):
    npho = rng.exponential(300.0, (2, N_SENSORS)).astype(np.float32)
    time = rng.normal(0.0, 5e-8, (2, N_SENSORS)).astype(np.float32)
    npho[0, :5] = [np.nan, 1e10, 0.0, 20.0, -1.0]  # invalid and dim sensors keep their raw values
    x, npho_valid, time_valid = normalize(npho, time, norm)
    return {
        "run": [1, 1], "event": [5, 9], "npho": npho, "time": time, "npho_valid": npho_valid,
        "time_valid": time_valid, "mask": rng.random((2, N_SENSORS)) < 0.5,
        "pred": x[..., [CHANNEL_INDEX[c] for c in channels]],  # a perfect reconstruction of the input
        "truth": {"energyTruth": np.array([0.05, 0.04], np.float32), "uvwTruth": rng.normal(size=(2, 3))},
        "norm": norm, "metadata": {"predict_channels": channels, "checkpoint": "m.pt", "split": "val"},
    }


@pytest.mark.parametrize("channels", [["npho", "time"], ["npho"]])
def test_mae_round_trip(tmp_path, channels):
    inputs = _mae_inputs(np.random.default_rng(4), channels)
    arrays, metadata = read_predictions(write_mae_predictions(tmp_path / "mae.root", **inputs))

    expected = {"run", "event", "input_npho", "input_time", "mask", "npho_valid", "time_valid",
                "energyTruth", "uvwTruth"} | {f"pred_{c}" for c in channels}
    assert set(arrays) == expected
    np.testing.assert_array_equal(arrays["input_npho"], inputs["npho"])  # the raw inputs, bit for bit
    np.testing.assert_array_equal(arrays["input_time"], inputs["time"])
    for name in ("mask", "npho_valid", "time_valid"):
        np.testing.assert_array_equal(arrays[name].astype(bool), inputs[name])
    np.testing.assert_allclose(arrays["uvwTruth"], inputs["truth"]["uvwTruth"])
    np.testing.assert_array_equal(arrays["event"], [5, 9])
    assert metadata["predict_channels"] == channels
    assert metadata["units"] == {"npho": "photo-electrons", "time": "s"}
    assert NormalizationConfig(**metadata["normalization"]) == NormalizationConfig()


@pytest.mark.parametrize("scheme", ["log1p", "sqrt"])
def test_mae_predictions_are_physical_and_equal_the_raw_inputs_they_reconstruct(tmp_path, scheme):
    norm = NormalizationConfig(npho_scheme=scheme, time_shift=0.3)
    inputs = _mae_inputs(np.random.default_rng(6), ["npho", "time"], norm)
    arrays, _ = read_predictions(write_mae_predictions(tmp_path / "mae.root", **inputs))
    assert arrays["pred_npho"].dtype == arrays["pred_time"].dtype == np.float32
    for channel, valid in (("npho", inputs["npho_valid"]), ("time", inputs["time_valid"])):
        got, raw = arrays[f"pred_{channel}"], arrays[f"input_{channel}"]
        np.testing.assert_allclose(got[valid], raw[valid], rtol=2e-5, atol=1e-12)
    # the prediction of an invalid sensor is the inverse of what the model output there (the sentinel)
    expected = {"npho": npho_inverse(np.float64(norm.npho_sentinel), norm),
                "time": time_inverse(np.float64(norm.time_sentinel), norm)}
    np.testing.assert_allclose(arrays["pred_npho"][0, 0], expected["npho"], rtol=1e-6)
    np.testing.assert_allclose(arrays["pred_time"][~inputs["time_valid"]], expected["time"], rtol=1e-6)


def test_mae_pred_must_match_predict_channels(tmp_path):
    inputs = _mae_inputs(np.random.default_rng(5), ["npho", "time"])
    inputs["metadata"]["predict_channels"] = ["npho"]
    with pytest.raises(ValueError, match=r"pred \(predict_channels \['npho'\]\) has shape"):
        write_mae_predictions(tmp_path / "mae.root", **inputs)
    inputs["metadata"]["predict_channels"] = ["charge"]
    with pytest.raises(ValueError, match="must name channels"):
        write_mae_predictions(tmp_path / "mae.root", **inputs)


def test_read_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.root"
    with pytest.raises(PredictionFileError, match="missing.root does not exist"):
        read_predictions(missing)
    import uproot

    with uproot.recreate(tmp_path / "other.root") as file:
        file["tree"] = {"x": np.zeros(3)}
    with pytest.raises(PredictionFileError, match=r"other.root lacks the tree\(s\) \['metadata'\]"):
        read_predictions(tmp_path / "other.root")
    (tmp_path / "junk.root").write_bytes(b"not a root file")
    with pytest.raises(PredictionFileError, match="junk.root: cannot read"):
        read_predictions(tmp_path / "junk.root")
