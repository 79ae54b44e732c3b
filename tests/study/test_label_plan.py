"""Label-study planning: equal step budgets, names, overrides and refusals (no training)."""
from __future__ import annotations

import pytest

from lib.config import ConfigError, RegressorConfig, load_config
from lib.study.label_plan import check_study, default_total_steps, label_points, step_schedule


def _cfg(**data) -> RegressorConfig:
    return RegressorConfig.model_validate({"data": {"batch_size": 32, "in_memory": True, **data},
                                           "training": {"epochs": 12, "warmup_epochs": 0.5}})


@pytest.mark.parametrize("events", [40, 250, 1000, 4000, 16000])
@pytest.mark.parametrize("total", [96, 500, 1250, 997])
def test_every_point_gets_exactly_the_budget_within_one_pass(events, total):
    cfg = _cfg()
    schedule = step_schedule(total, events, cfg, validations=4)
    assert schedule.steps == total
    assert 1 <= schedule.steps_per_epoch <= events // 32
    assert schedule.warmup_epochs * schedule.steps_per_epoch == pytest.approx(total * 0.5 / 12, rel=1e-5)
    assert schedule.epochs // schedule.val_every in range(min(4, schedule.epochs), 8)


def test_steps_per_epoch_is_as_large_as_one_pass_allows():
    assert step_schedule(480, 250, _cfg(), 4).steps_per_epoch == 6  # 7 full batches; 480 = 80 x 6
    assert step_schedule(480, 4000, _cfg(), 4).steps_per_epoch == 120  # 125 full batches; 480 = 4 x 120
    assert step_schedule(100, 16000, _cfg(), 4).epochs == 1


def test_streams_of_workers_leave_a_batch_each_at_most():
    streamed = _cfg(in_memory=False, num_workers=3)
    assert step_schedule(480, 250, streamed, 4).steps_per_epoch == 5  # 7 - 2 sure batches
    with pytest.raises(ConfigError, match="do not fill one batch"):
        step_schedule(480, 40, streamed, 4)


def test_default_budget_is_the_configs_epochs_over_the_largest_n():
    assert default_total_steps(_cfg(), [250, 1000]) == 12 * 31


def test_points_name_modes_and_carry_their_overrides(tmp_path):
    encoder = tmp_path / "enc.pt"
    points = label_points("st", _cfg(), [250, 1000], 2, ["pretrained", "frozen", "scratch"], str(encoder), 480, 4)
    assert [p.run_name for p in points[:4]] == ["st_pretrained_n250_s0", "st_frozen_n250_s0", "st_scratch_n250_s0",
                                               "st_pretrained_n250_s1"]
    assert len(points) == 12
    by_name = {p.run_name: p for p in points}
    frozen, scratch = by_name["st_frozen_n250_s1"].overrides, by_name["st_scratch_n1000_s0"].overrides
    assert f"model.pretrained_encoder={encoder.resolve()}" in frozen and "model.freeze_encoder=true" in frozen
    assert "model.pretrained_encoder=null" in scratch and "model.freeze_encoder=false" in scratch
    assert "training.seed=43" in frozen and "data.max_events=250" in frozen
    assert "mlflow.tags.study_mode=frozen" in frozen and "mlflow.tags.study_events='250'" in frozen
    resolved = load_config(None, list(frozen), root=RegressorConfig)
    assert resolved.mlflow.tags == {"study": "st", "study_mode": "frozen", "study_events": "250", "study_seed": "1"}
    assert resolved.training.epochs * resolved.data.steps_per_epoch == 480


@pytest.mark.parametrize("events, seeds, modes, encoder, message", [
    ([1000, 250], 1, ["scratch"], None, "increasing, distinct"),
    ([250, 250], 1, ["scratch"], None, "increasing, distinct"),
    ([8], 0, ["scratch"], None, "at least 1"),
    ([8], 1, ["warm"], None, "choose among pretrained,frozen,scratch"),
    ([8], 1, ["frozen"], None, "--mae ENCODER is needed"),
    ([8], 1, ["pretrained"], "/no/encoder.pt", "no such file"),
    ([8, 1000], 1, ["scratch"], None, "data.train_path holds 120"),
])
def test_bad_studies_are_refused_with_what_to_change(shard_dir, events, seeds, modes, encoder, message):
    cfg = RegressorConfig.model_validate({"data": {"train_path": str(shard_dir), "val_path": str(shard_dir),
                                                   "batch_size": 4}})
    with pytest.raises(ConfigError, match=message):
        check_study(cfg, events, seeds, modes, encoder)
