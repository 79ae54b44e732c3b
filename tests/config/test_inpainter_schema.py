"""The inpainter's root config (kind inp): its own defaults, mask modes and bad values, and the config CLI."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import ROOTS, ConfigError, InpainterConfig, load_config

REPO = Path(__file__).resolve().parents[2]


def test_inp_kind_has_the_inpainter_defaults():
    cfg = load_config(None, root=ROOTS["inp"])
    assert isinstance(cfg, InpainterConfig) and cfg.checkpoint.run_name.startswith("inp_")
    assert cfg.training.mask_ratio == 0.05 and cfg.training.mask_mode == "random"
    assert cfg.model.predict_channels == ["npho"] and cfg.model.freeze_encoder is False
    assert cfg.data.dead_channels is None and cfg.model.pretrained_encoder is None


@pytest.mark.parametrize("value", ["0", "1", "1.5", "-0.1"])
def test_mask_ratio_zero_or_at_least_one_is_refused(value):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [f"training.mask_ratio={value}"], root=InpainterConfig)
    lines = [line for line in str(caught.value).splitlines() if "training.mask_ratio" in line]
    assert len(lines) == 1 and "0.0 < mask_ratio < 1.0" in lines[0] and f"--set training.mask_ratio={value}" in lines[0]


@pytest.mark.parametrize("mode", ["dead_pattern", "mixed"])
def test_dead_pattern_modes_need_a_dead_channel_list(tmp_path, mode):
    config = tmp_path / "inp.yaml"
    config.write_text(f"training:\n  epochs: 2\n  mask_mode: {mode}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config, root=InpainterConfig)
    assert f"training.mask_mode ({config}:3) = '{mode}': training.mask_mode={mode} draws masks from dead-channel " \
           "lists: set data.dead_channels" in str(caught.value)
    cfg = load_config(config, ["data.dead_channels=dead.txt"], root=InpainterConfig)
    assert cfg.training.mask_mode == mode


def test_unknown_mask_mode_and_regressor_keys_are_refused():
    with pytest.raises(ConfigError, match="training.mask_mode"):
        load_config(None, ["training.mask_mode=dead"], root=InpainterConfig)
    with pytest.raises(ConfigError, match="model.layer_decay.*unknown key"):
        load_config(None, ["model.layer_decay=0.9"], root=InpainterConfig)


def test_config_cli_shows_and_describes_the_inp_kind(tmp_path):
    shown = subprocess.run([sys.executable, "-m", "lib.config", "show", "--kind", "inp", "--mask_ratio", "0.1",
                            "--set", "model.freeze_encoder=true"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    resolved = yaml.safe_load(shown.stdout)
    assert resolved["training"]["mask_ratio"] == 0.1 and resolved["model"]["freeze_encoder"] is True
    assert resolved["training"]["mask_mode"] == "random" and resolved["data"]["dead_channels"] is None
    out = tmp_path / "inp.schema.json"
    written = subprocess.run([sys.executable, "-m", "lib.config", "schema", "--kind", "inp", "--out", str(out)],
                             cwd=REPO, capture_output=True, text=True, timeout=120)
    assert written.returncode == 0, written.stderr
    schema = json.loads(out.read_text())
    assert schema["title"] == "InpainterConfig" and "InpainterTrainingConfig" in schema["$defs"]
    assert schema["$defs"]["InpainterTrainingConfig"]["properties"]["mask_ratio"]["default"] == 0.05
