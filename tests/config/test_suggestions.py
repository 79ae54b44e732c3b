"""Loading a research-code config or key: one line pointing at `migrate` for a whole file, the right
"did you mean" (the research code's names, across sections) at the line of the key itself, and the
research code's own legacy keys migrating like ours."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import (
    LEGACY_KEYS,
    ConfigError,
    MAEConfig,
    RegressorConfig,
    flatten_config,
    load_config,
    parse_args,
    read_yaml,
    to_dict,
)
from lib.config.suggestions import research_markers

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, root=MAEConfig) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, root=root)
    return str(info.value)


# --- a whole research-code file: one line --------------------------------------------------------

@pytest.mark.parametrize("name, root", [("research_mae.yaml", MAEConfig), ("research_reg.yaml", RegressorConfig),
                                        ("research_reg_legacy.yaml", RegressorConfig),
                                        ("research_inp.yaml", MAEConfig)])
def test_research_file_gets_one_line_pointing_at_migrate(name, root):
    message = error_of(DATA / name, root)
    assert "\n" not in message
    assert "looks like a research-code config" in message
    assert message.endswith(f"run `python -m lib.config migrate {DATA / name}`")


@pytest.mark.parametrize("command", [
    ["-m", "lib.config", "show", "--config"],
    ["-m", "lib.train_regressor", "--config"],
    ["-m", "jobs.submit", "regressor", "--dry-run"],
])
def test_show_train_and_dry_run_say_it_in_one_line(command):
    path = DATA / "research_reg.yaml"
    env = {**os.environ, "EXECUTOR": "local"}
    done = subprocess.run([sys.executable, *command, str(path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "looks like a research-code config" in errors[0], done.stderr
    assert f"python -m lib.config migrate {path}" in errors[0]
    assert "unknown key" not in done.stderr


def test_one_research_key_in_our_config_gets_a_suggestion_not_the_file_verdict(tmp_path):
    message = error_of(write(tmp_path, "training:\n  epochs: 3\n  ema_decay: 0.99\n"))
    assert "looks like a research-code config" not in message
    assert "did you mean 'training.ema.decay'?" in message


@pytest.mark.parametrize("path", sorted([*(REPO / "config").glob("mae/*.yaml"), *(REPO / "config").glob("reg/*.yaml")]),
                         ids=lambda p: p.name)
def test_our_shipped_configs_have_no_research_markers(path):
    root = RegressorConfig if path.parent.name == "reg" else MAEConfig
    assert research_markers(read_yaml(path)[1], root) == []


# --- suggestions ----------------------------------------------------------------------------

RESEARCH_NAMES = [  # the unknown keys of a research-code file and what we suggest for each
    ("data", "chunksize: 256000", "no equivalent here"),
    ("data", "num_threads: 4", "no equivalent here"),
    ("data", "prefetch_factor: 2", "no equivalent here"),
    ("normalization", "sentinel_time: -1.0", "did you mean 'normalization.time_sentinel'?"),
    ("normalization", "sentinel_npho: -1.0", "did you mean 'normalization.npho_sentinel'?"),
    ("model", "num_fusion_layers: 2", "did you mean 'model.fusion_depth'?"),
    ("model", "drop_path_rate: 0.1", "did you mean 'model.drop_path'?"),
    ("model", "mask_ratio: 0.6", "did you mean 'training.mask_ratio'?"),
    ("training", "lr_scheduler: cosine", "did you mean 'training.scheduler'?"),
    ("training", "lr_min: 1.0e-6", "did you mean 'training.min_lr'?"),
    ("training", "max_lr: 6.0e-4", "did you mean 'training.lr'?"),
    ("training", "ema_decay: 0.999", "did you mean 'training.ema.decay'?"),
    ("training", "track_metrics: false", "no equivalent here"),
    ("training", "channel_dropout_rate: 0.1", "no equivalent here (no channel dropout here)"),
    ("checkpoint", "root_save_interval: 10", "no equivalent here"),
    ("mlflow", "run_name: my_run", "did you mean 'checkpoint.run_name'?"),
    ("distributed", "num_gpus: 4", "did you mean 'slurm.num_gpus'?"),
]


@pytest.mark.parametrize("section, line, expected", RESEARCH_NAMES, ids=[r[1].split(":")[0] for r in RESEARCH_NAMES])
def test_research_names_suggest_their_new_key(tmp_path, section, line, expected):
    path = write(tmp_path, f"{section}:\n  {line}\n")
    key = f"{section}.{line.split(':')[0]}"
    message = error_of(path)
    assert f"{key} ({path}:2): unknown key; " in message
    assert expected in message


@pytest.mark.parametrize("text, line, key, expected", [
    ("training:\n  epochs: 3\n  batch_size: 8\n", 3, "training.batch_size", "did you mean 'data.batch_size'?"),
    ("training:\n  num_fusion_layers: 2\n", 2, "training.num_fusion_layers", "did you mean 'model.fusion_depth'?"),
    ("data:\n  learning_rate: 1e-3\n", 2, "data.learning_rate", "did you mean 'training.lr'?"),
    ("checkpoint:\n  experiment: x\n", 2, "checkpoint.experiment", "did you mean 'mlflow.experiment'?"),
])
def test_suggestions_search_every_section(tmp_path, text, line, key, expected):
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{key} ({path}:{line}): unknown key; {expected}" in message


@pytest.mark.parametrize("text, expected", [
    ("reweighting:\n  energy:\n    enabled: true\n", "a research-code section; its settings are now "
                                                    "tasks.<task>.reweight_bins"),
    ("export:\n  onnx: m.onnx\n", "a research-code section with no equivalent here"),
])
def test_research_sections_say_where_their_settings_went(tmp_path, text, expected):
    path = write(tmp_path, f"tasks: [energy]\n{text}")
    assert f"{text.split(':')[0]} ({path}:2): unknown key; {expected}" in error_of(path, RegressorConfig)


# --- the line of the offending key itself ---------------------------------------------------

def test_unknown_key_inside_a_task_names_its_own_line(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\ntasks:\n  energy:\n    weight: 2\n    loss_fn: l1\n")
    message = error_of(path, RegressorConfig)
    assert f"tasks.energy.loss_fn ({path}:6): unknown key; did you mean 'tasks.energy.loss'?" in message


def test_unknown_task_names_its_own_line_and_our_name(tmp_path):
    path = write(tmp_path, "tasks:\n  energy: {}\n  uvwFI:\n    loss: l1\n")
    message = error_of(path, RegressorConfig)
    assert f"tasks.uvwFI ({path}:3) = {{'loss': 'l1'}}: tasks: unknown task 'uvwFI'" in message
    assert "did you mean 'position'? ('uvwFI' is the research code's name)" in message


def test_check_of_a_whole_section_names_the_key_it_is_about(tmp_path):
    path = write(tmp_path, "model:\n  encoder_dim: 64\n  fusion_heads: 3\n")
    message = error_of(path)
    assert f"model.fusion_heads ({path}:3) = 3: model.fusion_heads = 3 must divide" in message


def test_command_line_error_keeps_its_origin(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--set", "training.lr_min=1e-6"])
    assert "training.lr_min (--set training.lr_min=1e-6): unknown key; did you mean 'training.min_lr'?" in \
        capsys.readouterr().err


# --- legacy keys, the research code's own included ------------------------------------------

def current_key(key: str) -> str:
    while key in LEGACY_KEYS:
        key = LEGACY_KEYS[key]
    return key


@pytest.mark.parametrize("old", sorted(LEGACY_KEYS))
def test_every_legacy_key_migrates_with_a_warning(tmp_path, old):
    value = 0.75 if not isinstance(flatten_config(to_dict(MAEConfig()))[current_key(old)], bool) else True
    nested: object = value
    for part in reversed(old.split(".")):
        nested = {part: nested}
    path = write(tmp_path, yaml.safe_dump(nested))
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated"):
        cfg = load_config(path)
    assert flatten_config(to_dict(cfg))[current_key(old)] == value


@pytest.mark.parametrize("old, new", [("training.time_weight", "training.time.weight"),
                                      ("model.time_mask_ratio_scale", "training.time.mask_ratio_scale")])
def test_research_code_legacy_keys_are_legacy_keys(old, new):
    assert LEGACY_KEYS[old] == new
    with pytest.warns(DeprecationWarning, match=f"use '{new}'"):
        cfg = load_config(None, [f"{old}=0.5"])
    assert flatten_config(to_dict(cfg))[new] == 0.5
