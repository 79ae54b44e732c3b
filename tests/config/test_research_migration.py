"""`python -m lib.config migrate`: research-code configs (tests/config/data/research_*.yaml, written in the
format of weiyuanli-icepp/xec-ml-wl) become configs of ours that load, with a report of every key."""
from __future__ import annotations

import fnmatch
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lib.config import ConfigError, InpainterConfig, RegressorConfig, load_config, read_yaml
from lib.config.research_keys import RESEARCH_KEYS, research_rule
from lib.config.research_migration import (
    check_migrated,
    flatten_leaves,
    migrate_data,
    migrate_file,
    write_migrated,
)
from lib.config.research_rules import DROPPED, LOST, MAPPED

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
RESEARCH_FILES = {"mae": "research_mae.yaml", "reg": "research_reg.yaml", "reg_legacy": "research_reg_legacy.yaml",
                  "inp": "research_inp.yaml"}
KIND_OF = {"mae": "mae", "reg": "reg", "reg_legacy": "reg", "inp": "inp"}


def run_config_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib.config", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def migrated(text: str, kind: str | None = None):
    data = yaml.safe_load(text)
    return migrate_data(data, {}, kind)


def outcome_of(migration, key: str):
    return next(entry.outcome for entry in migration.entries if entry.key == key)


# --- the table covers the research code's keys, the fixtures cover the table -----------------

def test_fixtures_cover_every_key_of_the_table_and_nothing_else():
    leaves = set()
    for name in RESEARCH_FILES.values():
        leaves |= set(flatten_leaves(read_yaml(DATA / name)[0]))
    unknown = sorted(key for key in leaves if research_rule(key) is None)
    assert not unknown, f"keys of the fixtures the table does not know: {unknown}"
    uncovered = sorted(p for p in RESEARCH_KEYS if not any(fnmatch.fnmatchcase(key, p) for key in leaves))
    assert not uncovered, f"table keys no fixture uses: {uncovered}"


@pytest.mark.parametrize("name", RESEARCH_FILES)
def test_every_key_gets_an_outcome_and_the_result_validates(name):
    migration = migrate_file(DATA / RESEARCH_FILES[name])
    assert migration.kind == KIND_OF[name]
    given = flatten_leaves(read_yaml(DATA / RESEARCH_FILES[name])[0])
    assert set(given) <= {entry.key for entry in migration.entries}
    assert all(entry.outcome.status in (MAPPED, DROPPED, LOST) for entry in migration.entries)
    assert not [e.key for e in migration.entries if "ignored it too" in e.outcome.note]
    check_migrated(migration)


# --- end to end through the command line ------------------------------------------------------

@pytest.mark.parametrize("name", RESEARCH_FILES)
def test_cli_writes_a_config_that_show_loads(tmp_path, name):
    old = DATA / RESEARCH_FILES[name]
    before = old.read_bytes()
    new = tmp_path / "new.yaml"
    done = run_config_cli("migrate", str(old), "--out", str(new))
    assert done.returncode == 0, done.stderr
    assert old.read_bytes() == before
    report = done.stdout
    kind = KIND_OF[name]
    assert f"kind {kind} (guessed from " in report and "pass --kind to choose" in report
    assert "mapped (old -> new):" in report and "dropped (not needed here):" in report
    assert f"python -m lib.config show --kind {kind} --config {new}" in report
    shown = run_config_cli("show", "--kind", kind, "--config", str(new))
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["schema_version"] == 1


def test_report_names_old_key_line_and_new_key(tmp_path):
    done = run_config_cli("migrate", str(DATA / "research_reg.yaml"), "--out", str(tmp_path / "new.yaml"))
    lines = done.stdout.splitlines()
    fusion = next(line for line in lines if line.strip().startswith("model.num_fusion_layers"))
    assert "research_reg.yaml:36)" in fusion and "-> model.fusion_depth = 4" in fusion
    sections = [line for line in lines if not line.startswith(" ")]
    assert "no equivalent (these settings are lost):" in sections
    lost_part = lines[lines.index("no equivalent (these settings are lost):"):]
    assert not any(line.strip().startswith("data.fiducial") for line in lost_part)
    fiducial = [line.strip() for line in lines if line.strip().startswith("data.fiducial")]
    assert any("-> training.fiducial_only = true" in line for line in fiducial)
    assert any("-> evaluation.fiducial.w_max = null" in line for line in fiducial)
    assert any("-> evaluation.fiducial.u_max = 23.9" in line for line in fiducial)


def test_inpainter_config_becomes_an_inp_config(tmp_path):
    new = tmp_path / "new.yaml"
    done = run_config_cli("migrate", str(DATA / "research_inp.yaml"), "--out", str(new))
    assert done.returncode == 0, done.stderr
    cfg = load_config(new, root=InpainterConfig)
    assert (cfg.model.freeze_encoder, cfg.model.predict_channels, cfg.model.encoder_dim) == (False, ["npho"], 1024)
    assert cfg.model.pretrained_encoder is None and cfg.training.mask_ratio == 0.05  # the inpainter's own default
    lines = done.stdout.splitlines()
    lost_part = lines[lines.index("no equivalent (these settings are lost):"):]
    for key in ("model.head_type", "model.cross_attn_k", "training.mae_checkpoint", "model.mask_ratio.inner"):
        assert any(line.strip().startswith(key) for line in lost_part), key
    mae_line = next(line for line in lost_part if line.strip().startswith("training.mae_checkpoint"))
    assert "encoder_best.pt as model.pretrained_encoder" in mae_line
    header = new.read_text().split("data:")[0]
    assert "model.head_type" in header and "per-face MLPs" in header


def test_inpainter_head_choices_of_the_research_code():
    per_face = migrated("model:\n  head_type: per_face\n  cross_attn_k: 8\n  use_local_context: false\n")
    assert outcome_of(per_face, "model.head_type").status == DROPPED
    assert outcome_of(per_face, "model.cross_attn_k").status == DROPPED
    assert outcome_of(per_face, "model.use_local_context").status == LOST
    ratio = migrated("model:\n  head_type: per_face\n  mask_ratio: 0.1\n")
    assert check_migrated(ratio).training.mask_ratio == 0.1


def test_without_out_the_yaml_goes_to_stdout_and_the_report_to_stderr(tmp_path):
    done = run_config_cli("migrate", str(DATA / "research_mae.yaml"), "--kind", "mae")
    assert done.returncode == 0, done.stderr
    assert "kind mae (as given)" in done.stderr and "mapped (old -> new):" in done.stderr
    new = tmp_path / "from_stdout.yaml"
    new.write_text(done.stdout)
    assert load_config(new).training.mask_ratio == 0.65


# --- writing: atomic, never over an existing file without --force, never over the old file ----

def test_existing_output_needs_force_and_the_old_file_is_never_replaced(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text((DATA / "research_mae.yaml").read_text())
    new = tmp_path / "new.yaml"
    new.write_text("keep me\n")
    refused = run_config_cli("migrate", str(old), "--out", str(new))
    assert refused.returncode == 2 and "exists; pass --force" in refused.stderr
    assert new.read_text() == "keep me\n"
    forced = run_config_cli("migrate", str(old), "--out", str(new), "--force")
    assert forced.returncode == 0, forced.stderr
    assert load_config(new).model.fusion_depth == 1
    onto_itself = run_config_cli("migrate", str(old), "--out", str(old), "--force")
    assert onto_itself.returncode == 2 and "is the file being migrated" in onto_itself.stderr
    assert old.read_text() == (DATA / "research_mae.yaml").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.yaml", "old.yaml"]


def test_a_result_that_does_not_validate_is_not_written(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("model:\n  encoder_dim: 100\n  mask_ratio: 0.5\ntraining:\n  ema_decay: 0.99\n")
    new = tmp_path / "new.yaml"
    done = run_config_cli("migrate", str(old), "--out", str(new))
    assert done.returncode == 2 and "model.encoder_dim" in done.stderr and "multiple of 32" in done.stderr
    assert "mapped (old -> new):" in done.stderr and not new.exists()


def test_write_migrated_replaces_atomically_with_force(tmp_path):
    new = tmp_path / "new.yaml"
    write_migrated(new, "a: 1\n", tmp_path / "old.yaml")
    with pytest.raises(ConfigError, match="exists"):
        write_migrated(new, "a: 2\n", tmp_path / "old.yaml")
    write_migrated(new, "a: 3\n", tmp_path / "old.yaml", force=True)
    assert new.read_text() == "a: 3\n" and [p.name for p in tmp_path.iterdir()] == ["new.yaml"]


# --- kinds ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, kind, marker", [
    ("tasks:\n  energy:\n    enabled: true\n", "reg", "tasks"),
    ("model:\n  head_type: per_face\n  mask_ratio: 0.1\n", "inp", "model.head_type"),
    ("model:\n  decoder_dim: 64\n", "mae", "model.decoder_dim"),
    ("training:\n  epochs: 3\n", "mae", None),
])
def test_kind_is_guessed_from_the_keys(text, kind, marker):
    migration = migrated(text)
    assert migration.kind == kind
    assert migration.guessed_from == ([marker] if marker else [])


def test_given_kind_wins_over_the_guess():
    migration = migrated("model:\n  decoder_dim: 64\n", kind="inp")
    assert (migration.kind, migration.guessed_from) == ("inp", None)


# --- conversions ------------------------------------------------------------------------------

def test_mae_values_are_converted():
    migration = migrate_file(DATA / "research_mae.yaml")
    cfg = check_migrated(migration)
    assert cfg.model.fusion_depth == 1 and cfg.model.encoder_dim == 512
    for key in ("model.outer_mode", "model.outer_fine_pool"):  # one outer encoding here, at sensor resolution
        assert outcome_of(migration, key).status == DROPPED
    assert (cfg.training.amp, cfg.training.compile) == ("bf16", True)
    assert (cfg.training.ema.enabled, cfg.training.ema.decay) == (True, 0.995)
    assert (cfg.training.lr, cfg.training.lr_scaling, cfg.training.min_lr) == (2.5e-4, False, 1e-8)
    assert cfg.training.grad_clip is None  # 0 switched clipping off
    assert (cfg.training.mask_ratio, cfg.training.time.mask_ratio_scale, cfg.training.time.weight) == (0.65, 1.5, 0.5)
    assert cfg.normalization.npho_threshold == 50 and cfg.training.time.use_npho_weight is True
    assert (cfg.normalization.npho_sentinel, cfg.normalization.time_sentinel) == (-1.0, -1.0)
    assert cfg.training.num_val_predictions == 0 and cfg.training.loss_fn == "huber"
    assert cfg.checkpoint.run_name == "mae_scan_s1" and cfg.slurm.num_gpus == 2


def test_regressor_tasks_schedule_and_reweighting_are_converted():
    migration = migrate_file(DATA / "research_reg.yaml")
    cfg = check_migrated(migration)
    assert isinstance(cfg, RegressorConfig)
    assert list(cfg.tasks) == ["angle", "energy", "position"]  # uvwFI is position; timing was off
    assert cfg.tasks["position"].loss == "smooth_l1" and cfg.tasks["position"].weight == 0.5  # from huber
    assert cfg.tasks["angle"].loss == "gaussian_nll" and cfg.tasks["angle"].reweight_bins == 20
    assert cfg.tasks["energy"].reweight_bins == 30 and cfg.tasks["energy"].weight == 2.0
    assert {task.head_hidden for task in cfg.tasks.values()} == {128}
    assert cfg.training.task_balance == "learned"
    assert (cfg.training.scheduler, cfg.training.lr, cfg.training.lr_scaling) == ("onecycle", 6e-4, False)
    assert cfg.training.warmup_epochs == pytest.approx(0.2 * 100)  # pct_start x epochs
    assert cfg.checkpoint.run_name == "ang_scan_s21_fulldata_onecycle" and cfg.slurm.num_gpus == 4
    assert outcome_of(migration, "tasks.energy.loss_beta").status == LOST
    assert outcome_of(migration, "training.lr").status == DROPPED


def test_first_research_format_is_converted():
    migration = migrate_file(DATA / "research_reg_legacy.yaml")
    cfg = check_migrated(migration)
    assert list(cfg.tasks) == ["timing"] and cfg.tasks["timing"].reweight_bins == 40
    assert cfg.normalization.time_sentinel == -5.0 and outcome_of(migration, "model.outer_mode").status == DROPPED
    assert (cfg.training.amp, cfg.training.ema.enabled) == ("none", False)
    assert outcome_of(migration, "training.scheduler").status == LOST  # plateau
    assert outcome_of(migration, "checkpoint.resume_from").status == LOST


def test_seed_controls_map_to_ours_and_need_a_checkpoint_to_continue():
    controls = "  reset_epoch: true\n  refresh_lr: false\n  new_mlflow_run: true\n"
    seeded = migrated("tasks:\n  energy:\n    enabled: true\ncheckpoint:\n  resume_from: old.pth\n" + controls)
    assert outcome_of(seeded, "checkpoint.resume_from").status == LOST  # a research checkpoint cannot be loaded
    assert {k: v for k, v in seeded.data["checkpoint"].items()} == {
        "reset_epoch": True, "refresh_lr": False, "new_mlflow_run": True}
    assert check_migrated(seeded).checkpoint.reset_epoch is True  # loads; the run asks for a resume_from
    alone = migrated("tasks:\n  energy:\n    enabled: true\ncheckpoint:\n  resume_from: null\n" + controls)
    for key in ("reset_epoch", "refresh_lr", "new_mlflow_run"):
        outcome = outcome_of(alone, f"checkpoint.{key}")
        assert outcome.status == DROPPED and "no effect without checkpoint.resume_from" in outcome.note


def test_research_defaults_fill_settings_the_file_leaves_out():
    migration = migrated("model:\n  decoder_dim: 64\ntraining:\n  epochs: 5\n")
    cfg = check_migrated(migration)
    assert (cfg.training.amp, cfg.training.scheduler, cfg.training.lr, cfg.training.lr_scaling) == (
        "bf16", "none", 1e-4, False)
    assert cfg.data.batch_size == 1024 and cfg.training.time.use_npho_weight is True
    defaults = {e.key for e in migration.entries if e.research_default}
    assert "training.amp" in defaults and "training.epochs" not in defaults


def test_a_second_key_for_the_same_setting_is_reported_not_silently_merged():
    migration = migrated("normalization:\n  npho_threshold: 100\ntraining:\n  npho_threshold: 50\n")
    assert check_migrated(migration).normalization.npho_threshold == 100
    clash = outcome_of(migration, "training.npho_threshold")
    assert clash.status == LOST and "already 100 from normalization.npho_threshold" in clash.note


def test_keys_the_research_code_did_not_know_are_dropped_as_it_ignored_them():
    migration = migrated("training:\n  epochs: 5\n  warmup_steps: 9\n")
    assert "ignored it too" in outcome_of(migration, "training.warmup_steps").note


def test_migration_imports_no_torch_and_nothing_of_lib_but_config_and_io():
    probe = ("import sys, lib.config.__main__; "
             "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('lib.') "
             "and not m.startswith(('lib.config', 'lib.io'))))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_a_log_transformed_energy_becomes_the_log_target_and_other_tasks_lose_it():
    migration = migrated("tasks:\n  energy:\n    enabled: true\n    log_transform: true\n"
                         "  uvwFI:\n    enabled: true\n    log_transform: true\n")
    assert check_migrated(migration).tasks["energy"].log_target is True
    assert outcome_of(migration, "tasks.uvwFI.log_transform").status == LOST
