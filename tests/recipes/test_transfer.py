"""Encoder transfer MAE -> regressor and encoder freezing / layer decay (unit level, no training loop)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from lib.config import MAEConfig, RegressorConfig, to_dict
from lib.engine.checkpoint import save_checkpoint
from lib.engine.optim import build_optimizer
from lib.models.regressor import Regressor
from lib.recipes.finetune import build_regressor
from lib.recipes.pretrain import MAEModel
from lib.recipes.transfer import TransferError, load_pretrained_encoder, save_encoder
from tests.fixtures_e2e import differing_tensors, one_thread  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = {"preset": "tiny"}
TASKS = ["energy", "position"]


def _reg_cfg(**model: object) -> RegressorConfig:
    return RegressorConfig(model={**TINY, **model}, tasks=TASKS)


def _mae(seed: int = 1, normalization: dict | None = None) -> tuple[MAEModel, MAEConfig]:
    cfg = MAEConfig(model=TINY, normalization=normalization or {})
    torch.manual_seed(seed)
    return MAEModel(cfg), cfg


def _clone(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _export(tmp_path: Path, mae: MAEModel, cfg: MAEConfig) -> Path:
    path = tmp_path / "encoder_best.pt"
    save_encoder(mae.mae.encoder, cfg.model, cfg.normalization, path, source={"run_name": "test", "tag": "best"})
    return path


def _load(regressor: Regressor, path: Path, cfg: RegressorConfig, allow: bool = False) -> dict:
    return load_pretrained_encoder(regressor.encoder, path, cfg.model, cfg.normalization, allow)


# ------------------------------------------------------------------------------------------- transfer
def test_encoder_export_loads_into_the_regressor_and_leaves_the_heads(tmp_path):
    mae, mae_cfg = _mae()
    cfg = _reg_cfg()
    torch.manual_seed(2)
    regressor = build_regressor(cfg)
    heads = {k: v for k, v in _clone(regressor).items() if not k.startswith("encoder.")}
    expected = _clone(mae.mae.encoder)
    assert differing_tensors(_clone(regressor.encoder), expected), "differently seeded encoders must differ"

    report = _load(regressor, _export(tmp_path, mae, mae_cfg), cfg)
    assert differing_tensors(_clone(regressor.encoder), expected) == []
    assert differing_tensors({k: v for k, v in _clone(regressor).items() if not k.startswith("encoder.")}, heads) == []
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []
    assert report["normalization_differs"] == []


@pytest.mark.parametrize("with_ema", [False, True], ids=["weights", "ema-weights"])
def test_full_mae_checkpoint_is_detected_by_content(tmp_path, with_ema):
    mae, mae_cfg = _mae()
    ema_mae, _ = _mae(seed=3)
    source = ema_mae if with_ema else mae
    path = tmp_path / "something.bin"
    save_checkpoint({"schema_version": mae_cfg.schema_version, "config": to_dict(mae_cfg), "model": mae.state_dict(),
                     "ema": {"module": ema_mae.state_dict()} if with_ema else None, "epoch": 1}, path)
    cfg = _reg_cfg()
    regressor = build_regressor(cfg)

    report = _load(regressor, path, cfg)
    assert differing_tensors(_clone(regressor.encoder), _clone(source.mae.encoder)) == []
    assert report["missing_keys"] == [] and report["unexpected_keys"] == []


# ------------------------------------------------------------------------------------------- refusals
def test_export_of_another_encoder_version_is_refused_before_any_weight_changes(tmp_path):
    # an encoder_best.pt written before the outer face moved to sensor resolution has the same
    # architecture fields but other tensors: loading it partly would train half an encoder from scratch
    mae, mae_cfg = _mae()
    path = _export(tmp_path, mae, mae_cfg)
    content = torch.load(path, weights_only=True)
    name = next(key for key in content["encoder"] if "outer_coarse" in key)
    content["encoder"][name.replace("outer_coarse", "outer_fine")] = content["encoder"].pop(name)
    torch.save(content, path)
    cfg = _reg_cfg()
    regressor = build_regressor(cfg)
    before = _clone(regressor)
    with pytest.raises(TransferError, match="1 missing .*1 unexpected .*another version of the encoder"):
        _load(regressor, path, cfg)
    assert differing_tensors(_clone(regressor), before) == []


def test_missing_pretrained_path_is_refused(tmp_path):
    cfg = _reg_cfg()
    path = tmp_path / "nowhere" / "encoder_best.pt"
    with pytest.raises(TransferError, match="does not exist") as error:
        _load(build_regressor(cfg), path, cfg)
    assert str(path) in str(error.value)


@pytest.mark.parametrize("other, field", [({"encoder_dim": 96}, "model.encoder_dim"),
                                          ({"face_widths": [8, 24]}, "model.face_widths")])
def test_regressor_checkpoint_of_another_architecture_is_refused(tmp_path, other, field):
    other_cfg = _reg_cfg(**other)
    path = tmp_path / "other_regressor.pt"
    save_checkpoint({"schema_version": other_cfg.schema_version, "config": to_dict(other_cfg),
                     "model": build_regressor(other_cfg).state_dict(), "ema": None}, path)
    cfg = _reg_cfg()
    regressor = build_regressor(cfg)
    before = _clone(regressor)
    with pytest.raises(TransferError, match="another architecture") as error:
        _load(regressor, path, cfg)
    assert field in str(error.value)
    assert differing_tensors(_clone(regressor), before) == []


def test_normalization_mismatch_is_refused_unless_allowed(tmp_path, caplog):
    mae, mae_cfg = _mae(normalization={"npho_scale": 500.0})
    path = _export(tmp_path, mae, mae_cfg)
    cfg = _reg_cfg()
    regressor = build_regressor(cfg)
    with pytest.raises(TransferError, match="normalization.npho_scale") as error:
        _load(regressor, path, cfg)
    assert "--allow_normalization_mismatch" in str(error.value)

    with caplog.at_level(logging.WARNING, logger="lib.recipes.transfer"):
        report = _load(regressor, path, cfg, allow=True)
    assert "npho_scale" in caplog.text
    assert report["normalization_differs"] == ["npho_scale"]
    assert differing_tensors(_clone(regressor.encoder), _clone(mae.mae.encoder)) == []


@pytest.mark.parametrize("content", ["random-bytes", "unrelated-dict", "plain-state-dict"])
def test_file_that_is_neither_export_nor_checkpoint_is_refused(tmp_path, content):
    path = tmp_path / "encoder.pt"
    if content == "random-bytes":
        path.write_bytes(bytes(range(256)) * 16)
    else:
        torch.save({"weights": torch.ones(3), "epoch": 2} if content == "unrelated-dict"
                   else _mae()[0].mae.encoder.state_dict(), path)
    cfg = _reg_cfg()
    expected = "not a readable torch file" if content == "random-bytes" else "neither an MAE encoder export"
    with pytest.raises(TransferError, match=expected) as error:
        _load(build_regressor(cfg), path, cfg)
    assert str(path) in str(error.value)


# ------------------------------------------------------------------------------------- freeze / decay
def _fake_batch(regressor: Regressor, n: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    batch = {"x": torch.randn(n, 4760, 2, generator=generator) * 0.3,
             "energyTruth": 0.015 + 0.045 * torch.rand(n, generator=generator),
             "uvwTruth": torch.randn(n, 3, generator=generator) * 10}
    for task in regressor.tasks.values():
        task.fit(task.target(batch))
    return batch


def _one_step(cfg: RegressorConfig) -> tuple[Regressor, dict[str, torch.Tensor], torch.optim.Optimizer]:
    """Regressor, its parameters before one optimizer step, and the optimizer (after the step)."""
    torch.manual_seed(0)
    regressor = build_regressor(cfg)
    batch = _fake_batch(regressor)
    before = {k: v.detach().clone() for k, v in regressor.named_parameters()}
    optimizer = build_optimizer(regressor, cfg.training, lr=1e-2)
    loss, _, _ = regressor(batch)
    loss.backward()
    optimizer.step()
    return regressor, before, optimizer


def _changed(regressor: Regressor, before: dict[str, torch.Tensor], prefix: str) -> dict[str, bool]:
    return {k: not torch.equal(v, before[k]) for k, v in regressor.named_parameters() if k.startswith(prefix)}


def _optimized_ids(optimizer: torch.optim.Optimizer) -> set[int]:
    return {id(p) for group in optimizer.param_groups for p in group["params"]}


def test_frozen_encoder_stays_fixed_while_the_heads_train():
    regressor, before, optimizer = _one_step(_reg_cfg(freeze_encoder=True))
    encoder_changed = _changed(regressor, before, "encoder.")
    heads_changed = _changed(regressor, before, "heads.")
    assert encoder_changed and not any(encoder_changed.values())
    assert heads_changed and all(heads_changed.values())
    optimized = _optimized_ids(optimizer)
    assert not any(id(p) in optimized for p in regressor.encoder.parameters())
    assert all(id(p) in optimized for p in regressor.heads.parameters())


def test_trainable_layers_trains_only_the_last_stage_groups():
    n_trainable = 2
    regressor, before, optimizer = _one_step(_reg_cfg(trainable_layers=n_trainable))
    groups = regressor.encoder.stage_groups()
    assert len(groups) > n_trainable
    names = {id(p): f"encoder.{k}" for k, p in regressor.encoder.named_parameters()}
    optimized = _optimized_ids(optimizer)
    for index, group in enumerate(groups):
        trainable = index >= len(groups) - n_trainable
        for param in group.parameters():
            name = names[id(param)]
            assert (not torch.equal(param.detach(), before[name])) == trainable, (index, name)
            assert (id(param) in optimized) == trainable, (index, name)


def test_trainable_layers_above_the_number_of_groups_names_the_limit():
    n_groups = len(build_regressor(_reg_cfg()).encoder.stage_groups())
    with pytest.raises(ValueError, match=f"only {n_groups} stage groups") as error:
        build_regressor(_reg_cfg(trainable_layers=n_groups + 1))
    assert f"from 0 to {n_groups}" in str(error.value)


def test_layer_decay_gives_earlier_groups_a_lower_lr():
    decay, lr = 0.5, 1e-2
    cfg = _reg_cfg(layer_decay=decay)
    regressor = build_regressor(cfg)
    optimizer = build_optimizer(regressor, cfg.training, lr=lr)
    lr_of = {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}
    groups = regressor.encoder.stage_groups()
    for index, group in enumerate(groups):
        expected = lr * decay ** (len(groups) - index)
        assert all(lr_of[id(p)] == pytest.approx(expected) for p in group.parameters()), index
    assert all(lr_of[id(p)] == lr for p in regressor.heads.parameters())
