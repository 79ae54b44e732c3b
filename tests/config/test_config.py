"""Tests of lib.config: YAML loading, overrides, validation messages, resolved dumps and the CLI."""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import (
    LEGACY_KEYS,
    ConfigError,
    EMAConfig,
    MAEConfig,
    build_arg_parser,
    diff_from_defaults,
    dump_yaml,
    load_config,
    load_resolved,
    parse_args,
    to_dict,
    validate_data,
    write_resolved,
)
from lib.config.load import parse_yaml_value

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = MAEConfig()


def write(tmp_path: Path, text: str, name: str = "cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path | None, overrides=(), **kwargs) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides, **kwargs)
    return str(info.value)


# --- defaults and YAML numbers -------------------------------------------------------------

def test_defaults_without_file_and_from_empty_file(tmp_path):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    from_nothing = load_config(None)
    from_empty = load_config(write(tmp_path, "# nothing here\n"))
    for cfg in (from_nothing, from_empty):
        name = cfg.checkpoint.run_name
        assert name.startswith("mae_")
        stamp = dt.datetime.strptime(name[4:], "%Y%m%d_%H%M%S").replace(tzinfo=dt.timezone.utc)
        assert before <= stamp <= dt.datetime.now(dt.timezone.utc)
        expected = DEFAULTS.model_copy(update={"checkpoint": DEFAULTS.checkpoint.model_copy(update={"run_name": name})})
        assert cfg == expected


@pytest.mark.parametrize("text", ["1e-4", "1E-4", "-2e+5", "1.5e3", ".5e-1", "3.0", "1_000.5"])
def test_yaml_exponent_floats_are_floats(text):
    value = parse_yaml_value(text)
    assert isinstance(value, float) and value == float(text.replace("_", ""))


@pytest.mark.parametrize("text, expected", [("24:00:00", "24:00:00"), ("0x10", 16), ("1_000", 1000), ("e5", "e5")])
def test_yaml_other_scalars(text, expected):
    value = parse_yaml_value(text)
    assert value == expected and type(value) is type(expected)


def test_float_without_dot_in_file(tmp_path):
    cfg = load_config(write(tmp_path, "training:\n  lr: 1e-4\n  min_lr: 2E-7\nslurm:\n  time: 24:00:00\n"))
    assert cfg.training.lr == pytest.approx(1e-4) and cfg.training.min_lr == pytest.approx(2e-7)
    assert cfg.slurm.time == "24:00:00"


def test_empty_section_means_defaults(tmp_path):
    path = write(tmp_path, "training:\n  ema:\n  epochs: 3\ncheckpoint:\ndata:\n")
    cfg = load_config(path, ["data.batch_size=8"])
    assert cfg.training.ema == DEFAULTS.training.ema and cfg.training.epochs == 3 and cfg.data.batch_size == 8
    assert cfg.checkpoint.run_name.startswith("mae_")


# --- unknown keys and bad values ---------------------------------------------------------

def test_unknown_top_level_key(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\ntrainig_extra: 1\n")
    message = error_of(path)
    assert "trainig_extra" in message and f"{path}:3" in message


def test_misspelt_nested_key_names_line_and_nearest_key(tmp_path):
    path = write(tmp_path, "data:\n  batch_size: 8\ntraining:\n  epochs: 3\n  lerning_rate: 1e-3\n")
    message = error_of(path)
    assert "training.lerning_rate" in message and f"{path}:5" in message
    assert "'training.lr'" in message


def test_misspelt_key_in_imported_section(tmp_path):
    message = error_of(write(tmp_path, "normalization:\n  npho_schem: sqrt\n"))
    assert "normalization.npho_schem" in message and "'normalization.npho_scheme'" in message


@pytest.mark.parametrize(
    "text, key, bad",
    [
        ("training:\n  mask_ratio: 1.5\n", "training.mask_ratio", "1.5"),
        ("training:\n  mask_ratio: 0\n", "training.mask_ratio", "0"),
        ("training:\n  mask_ratio: 1\n", "training.mask_ratio", "1"),
        ("training:\n  epochs: 0\n", "training.epochs", "0"),
        ("data:\n  batch_size: -1\n", "data.batch_size", "-1"),
        ("training:\n  betas: [0.95, 0.9]\n", "training.betas", "[0.95, 0.9]"),
        ("checkpoint:\n  run_name: a/b\n", "checkpoint.run_name", "'a/b'"),
        ("checkpoint:\n  run_name: my run\n", "checkpoint.run_name", "'my run'"),
        ("slurm:\n  time: two days\n", "slurm.time", "'two days'"),
    ],
)
def test_bad_values_name_key_value_and_line(tmp_path, text, key, bad):
    path = write(tmp_path, text)
    message = error_of(path)
    assert f"{key} ({path}:2) = {bad}:" in message


@pytest.mark.parametrize("ratio", [1.5, 0.0, 1.0])
def test_mask_ratio_message_gives_allowed_range(tmp_path, ratio):
    message = error_of(None, [f"training.mask_ratio={ratio}"])
    assert "0.0 < mask_ratio < 1.0" in message and "--set training.mask_ratio" in message


def test_all_problems_reported_at_once(tmp_path):
    message = error_of(write(tmp_path, "training:\n  epochs: 0\ndata:\n  batch_size: 0\n"))
    assert "training.epochs" in message and "data.batch_size" in message


def test_validate_data_works_for_any_section():
    with pytest.raises(ConfigError, match=r"decay = 2: out of range; allowed: 0.0 < decay < 1.0"):
        validate_data({"decay": 2}, EMAConfig, origin="ema test")
    assert validate_data({"decay": 0.5}, EMAConfig) == EMAConfig(decay=0.5)


def test_duplicate_key_is_an_error(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\n  epochs: 4\n")
    message = error_of(path)
    assert "duplicate" in message and f"{path}:3" in message and f"{path}:2" in message


def test_missing_file_and_non_mapping_file(tmp_path):
    assert "not found" in error_of(tmp_path / "nope.yaml")
    assert "mapping" in error_of(write(tmp_path, "- a\n- b\n"))


# --- overrides ---------------------------------------------------------------------------

def test_flags_and_set_overrides(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 7\n  lr: 1e-3\ncheckpoint:\n  resume_from: old.pt\n")
    argv = [
        "--config", str(path), "--epochs", "3", "--lr", "2e-4", "--compile", "--amp", "bf16",
        "--train_path", "a.root", "b.root", "--run_name", "trial1",
        "--set", "training.time.weight=2", "--set", "data.val_path=[c.root, d.root]",
        "--set", "checkpoint.resume_from=null",
    ]
    cfg, args = parse_args(argv)
    assert cfg.training.epochs == 3 and cfg.training.lr == pytest.approx(2e-4)
    assert cfg.training.compile is True and cfg.training.amp == "bf16"
    assert cfg.data.train_path == ["a.root", "b.root"] and cfg.data.val_path == ["c.root", "d.root"]
    assert cfg.training.time.weight == 2.0 and cfg.checkpoint.resume_from is None
    assert cfg.checkpoint.run_name == "trial1" and args.config == str(path)


def test_set_wins_over_flag_wins_over_file(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 7\n  seed: 1\n  mask_ratio: 0.5\n")
    cfg, _ = parse_args(["--config", str(path), "--epochs", "3", "--set", "training.epochs=5", "--seed", "2"])
    assert (cfg.training.epochs, cfg.training.seed, cfg.training.mask_ratio) == (5, 2, 0.5)


def test_extra_flag_maps_to_its_key():
    cfg, _ = parse_args(["--encoder_dim", "64"], extra_flags={"--encoder_dim": "model.encoder_dim"})
    assert cfg.model.encoder_dim == 64
    with pytest.raises(ConfigError, match="model.no_such_key"):
        build_arg_parser("x", {"--bogus": "model.no_such_key"})


@pytest.mark.parametrize("item", ["training.lr", "=3", "training..lr=3", "1x.lr=3", "training.lr=[1,"])
def test_invalid_set_syntax(item):
    with pytest.raises(ConfigError, match="training.lr|section.key=value|YAML"):
        load_config(None, [item])


def test_set_through_a_value_is_an_error(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 3\n")
    assert "'training.epochs' is a value" in error_of(path, ["training.epochs.x=1"])
    assert "training.epochs (--set training.epochs.x=1) = {'x': 1}" in error_of(None, ["training.epochs.x=1"])


def test_unknown_override_suggests_nearest_key():
    message = error_of(None, ["training.mask_ration=0.5"])
    assert "training.mask_ration (--set training.mask_ration=0.5)" in message and "'training.mask_ratio'" in message


def test_bad_config_on_command_line_exits_with_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parse_args(["--batch_size", "0"])
    assert info.value.code == 2
    assert "data.batch_size (command line) = 0" in capsys.readouterr().err


# --- legacy keys -------------------------------------------------------------------------

def test_legacy_keys_migrate_with_warning_and_file_is_untouched(tmp_path):
    text = "training:\n  time_mask_ratio_scale: 0.5\n  npho_threshold: 50\n  use_npho_time_weight: true\n"
    path = write(tmp_path, text)
    before = path.read_bytes()
    with pytest.warns(DeprecationWarning) as caught:
        cfg = load_config(path)
    warned = " ".join(str(warning.message) for warning in caught)
    written = ("training.time_mask_ratio_scale", "training.npho_threshold", "training.use_npho_time_weight")
    assert all(f"'{LEGACY_KEYS[old]}'" in warned for old in written)
    assert (cfg.training.time.mask_ratio_scale, cfg.normalization.npho_threshold) == (0.5, 50.0)
    assert cfg.training.time.use_npho_weight is True
    assert path.read_bytes() == before


OLD_THRESHOLDS = {  # the loss's time threshold in old configs, at 50
    "training.time.npho_threshold": "training:\n  time:\n    npho_threshold: 50\n",
    "training.npho_threshold": "training:\n  npho_threshold: 50\n",
}


@pytest.mark.parametrize("old", OLD_THRESHOLDS)
def test_time_threshold_of_the_loss_moves_to_the_normalization(tmp_path, old):
    nested = OLD_THRESHOLDS[old]
    with pytest.warns(DeprecationWarning, match=f"'{old}' is deprecated; write it as 'normalization.npho_threshold'"):
        cfg = load_config(write(tmp_path, nested))
    assert cfg.normalization.npho_threshold == 50.0 and "npho_threshold" not in type(cfg.training.time).model_fields
    with pytest.warns(DeprecationWarning, match=f"ignoring deprecated '{old}'"):  # the same value twice: fine
        cfg = load_config(write(tmp_path, nested + "normalization:\n  npho_threshold: 50.0\n", "same.yaml"))
    assert cfg.normalization.npho_threshold == 50.0
    with pytest.warns(DeprecationWarning):
        assert load_config(None, [f"{old}=30"]).normalization.npho_threshold == 30.0


@pytest.mark.parametrize("old", OLD_THRESHOLDS)
def test_conflicting_time_thresholds_are_refused_in_one_line(tmp_path, old):
    path = write(tmp_path, OLD_THRESHOLDS[old] + "normalization:\n  npho_threshold: 100\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert f"{old} = 50 disagrees with normalization.npho_threshold = 100" in message and "cfg.yaml" in message


def test_resolved_config_of_an_old_checkpoint_loads(custom_cfg):
    old = to_dict(custom_cfg)
    old["training"]["time"]["npho_threshold"] = 100.0  # both thresholds, as every old resolved config has them
    with pytest.warns(DeprecationWarning, match="ignoring deprecated 'training.time.npho_threshold'"):
        assert load_resolved(old) == custom_cfg
    old["normalization"]["npho_threshold"] = 0.0
    with pytest.raises(ConfigError, match="training.time.npho_threshold = 100.0 disagrees"):
        load_resolved(old)


def test_the_newer_of_two_legacy_keys_wins(tmp_path):
    path = write(tmp_path, "training:\n  npho_threshold: 50\n  time:\n    npho_threshold: 70\n")
    with pytest.warns(DeprecationWarning) as caught:
        cfg = load_config(path)
    assert "ignoring deprecated 'training.npho_threshold'" in " ".join(str(w.message) for w in caught)
    assert cfg.normalization.npho_threshold == 70.0


def test_legacy_key_in_override():
    with pytest.warns(DeprecationWarning):
        cfg = load_config(None, ["training.time_mask_ratio_scale=0.25"])
    assert cfg.training.time.mask_ratio_scale == 0.25


# --- resolved config ---------------------------------------------------------------------

@pytest.fixture
def custom_cfg(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 5\n  betas: [0.8, 0.99]\n  time:\n    weight: 2\n", "in.yaml")
    return load_config(path, ["data.train_path=[a.root, b.root]", "checkpoint.run_name=rt"])


def test_round_trip_through_dict_and_yaml(tmp_path, custom_cfg):
    assert load_resolved(to_dict(custom_cfg)) == custom_cfg
    legacy = {"training": {"npho_threshold": 5.0}}
    with pytest.warns(DeprecationWarning):
        assert load_resolved(legacy).normalization.npho_threshold == 5.0
    assert legacy == {"training": {"npho_threshold": 5.0}}, "load_resolved must not edit its input"
    assert load_resolved(yaml.safe_load(dump_yaml(custom_cfg))) == custom_cfg
    out = write_resolved(custom_cfg, tmp_path / "run" / "config.yaml")
    assert load_resolved(out) == custom_cfg
    assert os.listdir(out.parent) == ["config.yaml"]


def test_write_resolved_keeps_old_file_when_replace_fails(tmp_path, custom_cfg, monkeypatch):
    (tmp_path / "run").mkdir()
    target = write(tmp_path / "run", "old: content\n", "config.yaml")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_resolved(custom_cfg, target)
    assert target.read_text() == "old: content\n" and os.listdir(target.parent) == ["config.yaml"]


def test_load_resolved_rejects_unknown_keys_and_newer_schema(custom_cfg):
    data = to_dict(custom_cfg)
    data["training"]["bogus"] = 1
    with pytest.raises(ConfigError, match="training.bogus"):
        load_resolved(data)
    with pytest.raises(ConfigError, match="schema_version"):
        load_resolved({**to_dict(custom_cfg), "schema_version": 99})


def test_diff_from_defaults(custom_cfg):
    expected = {
        "training.epochs": (DEFAULTS.training.epochs, 5),
        "training.betas": (list(DEFAULTS.training.betas), [0.8, 0.99]),
        "training.time.weight": (DEFAULTS.training.time.weight, 2.0),
        "data.train_path": (DEFAULTS.data.train_path, ["a.root", "b.root"]),
        "checkpoint.run_name": (DEFAULTS.checkpoint.run_name, "rt"),
    }
    assert diff_from_defaults(custom_cfg) == expected
    assert diff_from_defaults(DEFAULTS) == {}


def test_effective_lr_scales_with_effective_batch():
    training = load_config(None, ["training.lr=1e-4", "training.grad_accum_steps=2"]).training
    assert training.effective_lr(batch_size=64, world_size=4) == pytest.approx(1e-4 * 64 * 4 * 2 / 256)
    unscaled = training.model_copy(update={"lr_scaling": False})
    assert unscaled.effective_lr(batch_size=64, world_size=4) == pytest.approx(1e-4)


def test_tracking_uri_falls_back_to_env_then_sqlite(tmp_path, monkeypatch):
    mlflow = DEFAULTS.mlflow
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracker:5000")
    assert mlflow.resolve_tracking_uri(tmp_path) == "http://tracker:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert mlflow.resolve_tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"


# --- shipped config and the command line ---------------------------------------------------

def test_shipped_mae_config_validates_and_sets_only_non_defaults():
    path = REPO / "config" / "mae" / "mae_config.yaml"
    cfg = load_config(path)
    assert cfg.training.amp == "bf16" and cfg.training.compile and cfg.training.ema.enabled
    def leaves(data, prefix=""):
        for key, value in data.items():
            yield from leaves(value, f"{prefix}{key}.") if isinstance(value, dict) else [f"{prefix}{key}"]

    repeated = set(leaves(yaml.safe_load(path.read_text()))) - set(diff_from_defaults(cfg))
    assert not repeated, f"the shipped config repeats schema defaults: {repeated}"


def run_module(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lib.config", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_cli_show_and_schema(tmp_path):
    shown = run_module("show", "--config", str(REPO / "config/mae/mae_config.yaml"), "--epochs", "3")
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout)
    assert resolved["training"]["epochs"] == 3 and resolved["training"]["amp"] == "bf16"
    out = tmp_path / "schema.json"
    written = run_module("schema", "--out", str(out))
    assert written.returncode == 0, written.stderr
    assert set(json.loads(out.read_text())["properties"]) == set(MAEConfig.model_fields)
