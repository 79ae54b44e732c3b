"""`extends: base.yaml`: a config file starts from another and overrides some of its keys."""
from __future__ import annotations

import pytest

from lib.config import ConfigError, RegressorConfig, load_config


def _write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_child_keys_win_and_nested_sections_merge(tmp_path):
    _write(tmp_path / "base.yaml", "tasks: [energy, position]\ntraining:\n  epochs: 7\n  lr: 2.0e-4\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\ntasks: [timing]\ntraining:\n  epochs: 3\n")
    cfg = load_config(child, root=RegressorConfig)
    assert list(cfg.tasks) == ["timing"]
    assert (cfg.training.epochs, cfg.training.lr) == (3, 2.0e-4)


def test_shipped_single_task_files_extend_the_full_size_base():
    base = load_config("config/reg/train_config.yaml", root=RegressorConfig)
    energy = load_config("config/reg/energy.yaml", root=RegressorConfig)
    assert list(energy.tasks) == ["energy"] and list(base.tasks) != ["energy"]
    assert energy.training == base.training and energy.model == base.model


def test_errors_in_the_base_name_the_base_file_and_line(tmp_path):
    _write(tmp_path / "base.yaml", "training:\n  epoch: 3\n")
    child = _write(tmp_path / "child.yaml", "extends: base.yaml\n")
    with pytest.raises(ConfigError, match=r"base\.yaml:2.*did you mean 'training\.epochs'"):
        load_config(child, root=RegressorConfig)


def test_missing_base_and_cycles_are_refused(tmp_path):
    missing = _write(tmp_path / "missing.yaml", "extends: nowhere.yaml\n")
    with pytest.raises(ConfigError, match="nowhere.yaml.*missing file"):
        load_config(missing, root=RegressorConfig)
    _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml", root=RegressorConfig)
