"""Which config changes give a run's weights another meaning (refused on FORCE=1 and at resume)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lib.config import MAEConfig, RegressorConfig, to_dict
from lib.config.compatibility import ABSENT, describe_differences, weight_defining_differences

REPO = Path(__file__).resolve().parents[2]


def _mae(**sections) -> dict:
    return to_dict(MAEConfig(**{"model": {"preset": "tiny"}, **sections}))


@pytest.mark.parametrize("sections, key, old, new", [
    ({"model": {"preset": "tiny", "encoder_dim": 128}}, "model.encoder_dim", 64, 128),
    ({"model": {"preset": "tiny", "predict_channels": ["npho"]}}, "model.predict_channels", ["npho", "time"], ["npho"]),
    ({"normalization": {"npho_scale": 2.0}}, "normalization.npho_scale", 1000.0, 2.0),
    ({"data": {"npho_branch": "npho_corr"}}, "data.npho_branch", "npho", "npho_corr"),
    ({"data": {"time_branch": "t"}}, "data.time_branch", "relative_time", "t"),
    ({"training": {"mask_ratio": 0.75}}, "training.mask_ratio", 0.6, 0.75),
    ({"training": {"time": {"weight": 2.0}}}, "training.time.weight", 1.0, 2.0),
])
def test_a_change_that_gives_the_weights_another_meaning_is_reported_with_both_values(sections, key, old, new):
    differences = weight_defining_differences(_mae(), _mae(**sections))
    assert differences == {key: (old, new)}


def test_training_and_bookkeeping_keys_may_change():
    changed = _mae(training={"epochs": 7, "lr": 1e-3, "seed": 3}, data={"batch_size": 8, "train_path": "x"},
                   checkpoint={"run_name": "other", "save_every_steps": 5}, slurm={"time": "1:00:00"})
    assert weight_defining_differences(_mae(), changed) == {}


def test_regressor_tasks_count_and_the_encoder_source_does_not():
    base = to_dict(RegressorConfig())
    other_tasks = to_dict(RegressorConfig(tasks=["energy", "timing"]))
    assert set(weight_defining_differences(base, other_tasks)) >= {"tasks.timing.loss", "tasks.timing.weight"}
    other_source = to_dict(RegressorConfig(model={"pretrained_encoder": "a.pt", "allow_normalization_mismatch": True}))
    assert weight_defining_differences(base, other_source) == {}


def test_a_key_present_on_one_side_only_differs():
    saved = _mae()
    wanted = {**saved, "model": {**saved["model"], "new_block": 2}}
    assert weight_defining_differences(saved, wanted) == {"model.new_block": (ABSENT, 2)}
    assert describe_differences({"model.new_block": (ABSENT, 2)}) == "model.new_block: <absent> -> 2"


def test_geometry_counts_once_the_saved_config_has_it():
    with_table = _mae(geometry={"sensor_table": "as_built.txt"})
    assert weight_defining_differences(_mae(), with_table) == {"geometry.sensor_table": (None, "as_built.txt")}
    older = {key: value for key, value in _mae().items() if key != "geometry"}  # saved before the section existed
    assert weight_defining_differences(older, with_table) == {}


def test_tuples_and_lists_with_equal_items_are_equal():
    old = _mae()
    new = {**old, "model": {**old["model"], "face_widths": tuple(old["model"]["face_widths"])}}
    assert weight_defining_differences(old, new) == {}


def test_the_comparison_does_not_import_torch():
    probe = ("import sys; from lib.config.compatibility import weight_defining_differences; "
             "assert 'torch' not in sys.modules")
    assert subprocess.run([sys.executable, "-c", probe], cwd=REPO).returncode == 0
