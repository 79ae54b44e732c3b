"""The model section: presets, and the removed outer-face keys dropped with a deprecation warning."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from lib.config import RegressorConfig, load_config
from lib.config.model_schema import PRESETS, ModelConfig


@pytest.mark.parametrize("key, value", [("outer_mode", "fine"), ("outer_mode", "split"), ("outer_fine_pool", [3, 5]),
                                        ("outer_fine_pool", None)])
def test_removed_outer_keys_load_with_a_warning_and_are_dropped(tmp_path: Path, key, value):
    path = tmp_path / "cfg.yaml"
    path.write_text(f"model:\n  preset: tiny\n  {key}: {'null' if value is None else value}\n")
    with pytest.warns(DeprecationWarning, match=f"model.{key} .* remove the key"):
        cfg = load_config(path)
    assert cfg.model == ModelConfig(preset="tiny")
    assert key not in cfg.model.model_dump()


def test_removed_keys_migrate_in_overrides_and_regressor_configs_too():
    with pytest.warns(DeprecationWarning, match="outer_mode"):
        cfg = load_config(None, ["model.outer_mode=fine", "model.outer_fine_pool=[3, 5]"], root=RegressorConfig)
    assert cfg.model.freeze_encoder is False and "outer_mode" not in cfg.model.model_dump()


def test_a_model_section_without_the_removed_keys_loads_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ModelConfig(preset="tiny", encoder_dim=96)


def test_large_preset_is_a_bigger_model_than_base_and_tiny_a_smaller_one():
    base, large, tiny = ModelConfig(), ModelConfig(preset="large"), ModelConfig(preset="tiny")
    assert set(PRESETS) == {"base", "large", "tiny"}
    for field in ("encoder_dim", "decoder_dim"):
        assert getattr(tiny, field) <= getattr(base, field) <= getattr(large, field)
    assert sum(base.face_widths) < sum(large.face_widths) and sum(tiny.face_widths) < sum(base.face_widths)
