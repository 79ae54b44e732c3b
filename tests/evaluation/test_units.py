"""lib.evaluation.units: normalized model outputs to physical units, the one inverse after the loader."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from lib.evaluation.units import physical_predictions
from lib.normalization import NPHO_SCHEMES, NormalizationConfig, normalize

LIB = Path(__file__).resolve().parents[2] / "lib"
INVERSE = re.compile(r"\b(npho_inverse|time_inverse|denormalize)\b")


@pytest.mark.parametrize("scheme", NPHO_SCHEMES)
def test_physical_predictions_invert_the_normalization(scheme):
    norm = NormalizationConfig(npho_scheme=scheme, npho_scale=50.0, time_scale=2e-7, time_shift=0.1, npho_threshold=0)
    rng = np.random.default_rng(0)
    npho = rng.uniform(1.0, 5000.0, (3, 40)).astype(np.float32)
    time = rng.normal(0.0, 5e-8, (3, 40)).astype(np.float32)
    x, _, _ = normalize(npho, time, norm)
    physical = physical_predictions(x[..., ::-1], ["time", "npho"], norm)  # channels in any order
    assert list(physical) == ["time", "npho"] and all(v.dtype == np.float32 for v in physical.values())
    np.testing.assert_allclose(physical["npho"], npho, rtol=1e-5)
    np.testing.assert_allclose(physical["time"], time, rtol=1e-5, atol=1e-13)
    with pytest.raises(ValueError, match="one last-axis entry per channel"):
        physical_predictions(x, ["npho"], norm)


def test_no_other_module_after_the_loader_inverts_the_normalization():
    users = sorted(
        str(path.relative_to(LIB))
        for package in ("losses", "evaluation", "plots", "recipes", "models", "tasks", "engine")
        for path in (LIB / package).rglob("*.py")
        if INVERSE.search(path.read_text(encoding="utf-8"))
    )
    assert users == ["evaluation/units.py"]
