"""lib.evaluation.inference: the classical baseline reads the raw inputs the loader carries, not an inverse."""
from __future__ import annotations

import numpy as np
import pytest

from lib.config import RegressorConfig
from lib.config.schema import DataConfig
from lib.data.build import build_loader
from lib.data.stream import RAW_INPUTS
from lib.evaluation.classical import ClassicalBaseline
from lib.evaluation.inference import fit_baseline, raw_inputs
from lib.normalization import normalize
from tests.conftest import make_events, write_root


@pytest.fixture
def val_events(tmp_path) -> tuple[RegressorConfig, dict[str, np.ndarray]]:
    """A regressor config whose validation set is two ROOT shards of made-up events."""
    events = make_events(50)
    events["npho"][3, :7] = [np.nan, 1e10, -5.0, 0.0, 20.0, np.inf, 1e-3]  # invalid and dim sensors
    for k, rows in enumerate((slice(0, 30), slice(30, 50))):
        write_root(tmp_path / f"val_{k}.root", {name: values[rows] for name, values in events.items()})
    data = DataConfig(val_path=str(tmp_path), batch_size=16, num_workers=0)
    return RegressorConfig(data=data), events


def test_baseline_inputs_are_the_files_raw_values_bit_for_bit(val_events):
    cfg, events = val_events
    loader = build_loader(cfg, "val", 0, 1, extras=RAW_INPUTS)
    seen = []
    for batch in loader:
        ids = batch["event"].numpy()
        npho, time, npho_valid, time_valid = raw_inputs(batch)
        assert npho.dtype == time.dtype == np.float64
        np.testing.assert_array_equal(npho, events["npho"][ids])
        np.testing.assert_array_equal(time, events["relative_time"][ids])
        _, want_npho_valid, want_time_valid = normalize(events["npho"][ids], events["relative_time"][ids],
                                                        cfg.normalization)
        np.testing.assert_array_equal(npho_valid, want_npho_valid)
        np.testing.assert_array_equal(time_valid, want_time_valid)
        seen.extend(ids)
    assert sorted(seen) == list(range(50))


def test_fit_baseline_fits_on_exactly_the_files_values(val_events):
    cfg, events = val_events
    fitted = fit_baseline(build_loader(cfg, "val", 0, 1, extras=RAW_INPUTS), max_events=50)
    _, npho_valid, time_valid = normalize(events["npho"], events["relative_time"], cfg.normalization)
    truth = {key: events[key] for key in ("energyTruth", "uvwTruth", "timeTruth")}
    direct = ClassicalBaseline().fit(events["npho"].astype(np.float64), events["relative_time"].astype(np.float64),
                                     npho_valid, time_valid, truth)
    assert fitted.coefficients.keys() == direct.coefficients.keys() == {"energy", "depth", "time"}
    for key, value in direct.coefficients.items():
        assert np.isfinite(value).all()
        np.testing.assert_array_equal(fitted.coefficients[key], value)


def test_a_loader_without_the_raw_inputs_is_refused_with_a_hint(val_events):
    cfg, _ = val_events
    with pytest.raises(ValueError, match=r"needs the batch columns \['npho_raw', 'time_raw'\].*extras="):
        fit_baseline(build_loader(cfg, "val", 0, 1), max_events=50)
